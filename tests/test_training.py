"""The shared training loop: missing values never matter, and resuming equals not stopping."""

import json
import os

import keras
import numpy as np
import pytest

from tfimpute import masks, training
from tfimpute.models.dcgan import DCGAN
from tfimpute.models.rbm import RBM
from tfimpute.training import ArrayTestSplit, TrainingOptions, run_training

OPTIONS = TrainingOptions(epochs=2, batch_size=16, seed=0, eval_size=20, grid_size=4)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    rng = np.random.default_rng(42)  # not the masks' seed: the draws would coincide
    images = (rng.random((70, 28, 28, 1)) < 0.2).astype(np.float32)
    mask = masks.generate_masks("independent", 0.5, 70, seed=0)
    return images, mask


def new_model():
    model = RBM(hidden_units=8, seed=1)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.05))
    return model


def train(workdir, images, mask, options=OPTIONS, model=None, log=print):
    model = model or new_model()
    data = masks.make_incomplete(images[:50], mask[:50])
    result = run_training(model, data, ArrayTestSplit(images[50:], mask[50:]), str(workdir), options, {"note": "test"}, log=log)
    return model, result


def test_training_is_unchanged_when_missing_pixels_are_altered(digits, tmp_path):
    images, mask = digits
    altered = np.where(mask == 1, images, 1.0 - images)  # flip every missing training pixel
    zeroed = masks.make_incomplete(images[:50], mask[:50])
    # The model is handed the flipped values themselves (not zeros) in the missing positions.
    unzeroed = masks.IncompleteData(observed=altered[:50], mask=mask[:50])
    original, changed = new_model(), new_model()
    for model, data in ((original, zeroed), (changed, unzeroed)):
        run_training(model, data, ArrayTestSplit(images[50:], mask[50:]), str(tmp_path / str(id(data))), OPTIONS, {})
    for a, b in zip(original.get_weights(), changed.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_outputs_and_metrics(digits, tmp_path):
    images, mask = digits
    _, result = train(tmp_path, images, mask)
    with open(tmp_path / "metrics.json") as f:
        written = json.load(f)
    assert written == result
    assert written["epochs"] == 2 and written["note"] == "test" and written["test_size"] == 20
    assert 0.0 < written["test_rmse"] < 1.0 and written["train_seconds"] > 0
    assert os.path.getsize(tmp_path / "imputations.png") > 0
    assert len(os.listdir(tmp_path / "tensorboard" / "test")) == 1
    assert os.path.exists(tmp_path / "checkpoints" / "checkpoint")


def test_resuming_after_an_epoch_equals_an_uninterrupted_run(digits, tmp_path):
    images, mask = digits
    straight, _ = train(tmp_path / "straight", images, mask)
    train(tmp_path / "resumed", images, mask, TrainingOptions(**{**OPTIONS.__dict__, "epochs": 1}))
    resumed, result = train(tmp_path / "resumed", images, mask)
    assert result["epochs"] == 2
    for a, b in zip(straight.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def tiny_dcgan():
    """Two Adam optimizers, batch-norm statistics and a flag set by `prepare`: all must resume."""
    model = DCGAN(latent_size=4, gan_width=2, search_steps=1, search_restarts=1, seed=3)
    model.compile()
    return model


@pytest.mark.parametrize("make_model", [new_model, tiny_dcgan], ids=["lmrbm", "dcgan"])
def test_interrupt_mid_epoch_checkpoints_and_resumes_exactly(digits, tmp_path, monkeypatch, make_model):
    images, mask = digits
    straight, _ = train(tmp_path / "straight", images, mask, model=make_model())

    real_batches = training.distributed_epoch

    def batches_with_ctrl_c(strategy, data, batch_size, seed, epoch, skip_batches=0):
        for index, batch in enumerate(real_batches(strategy, data, batch_size, seed, epoch, skip_batches)):
            if epoch == 1 and index == 2:  # Ctrl-C after two batches of the second epoch
                raise KeyboardInterrupt
            yield batch

    monkeypatch.setattr(training, "distributed_epoch", batches_with_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "resumed", images, mask, model=make_model())
    monkeypatch.undo()
    resumed, result = train(tmp_path / "resumed", images, mask, model=make_model())
    assert result["epochs"] == 2
    for a, b in zip(straight.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_sigterm_mid_epoch_checkpoints_like_ctrl_c_and_a_finished_run_is_left_alone(digits, tmp_path, monkeypatch):
    import signal

    from tfimpute.errors import Terminated

    images, mask = digits
    straight, _ = train(tmp_path / "straight", images, mask, model=new_model())
    real_batches = training.distributed_epoch

    def batches_then_sigterm(strategy, data, batch_size, seed, epoch, skip_batches=0):
        for index, batch in enumerate(real_batches(strategy, data, batch_size, seed, epoch, skip_batches)):
            if epoch == 1 and index == 2:  # what a scheduler sends before preempting the job
                os.kill(os.getpid(), signal.SIGTERM)
            yield batch

    monkeypatch.setattr(training, "distributed_epoch", batches_then_sigterm)
    with pytest.raises(Terminated):
        train(tmp_path / "resumed", images, mask, model=new_model())
    monkeypatch.undo()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is put back
    resumed, result = train(tmp_path / "resumed", images, mask, model=new_model())
    assert result["epochs"] == 2
    for a, b in zip(straight.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    # Run again: nothing is trained or evaluated, the stored metrics come back.
    logged = []
    _, again = train(tmp_path / "resumed", images, mask, model=new_model(), log=logged.append)
    assert again == result and logged == [f"{tmp_path / 'resumed'}: already trained 2 epochs; raise --epochs to continue"]


def test_learning_rate_warms_up_linearly_then_decays_along_a_cosine():
    from tfimpute.models.base import learning_rate_schedule

    schedule = learning_rate_schedule(0.1, warmup_steps=4, decay_steps=8)
    expected = {0: 0.0, 2: 0.05, 4: 0.1, 8: 0.05, 10: 0.1 * (1 + np.cos(np.pi * 6 / 8)) / 2, 12: 0.0, 30: 0.0}
    for step, rate in expected.items():
        assert float(schedule(step)) == pytest.approx(rate, abs=1e-7), step
    warm_only = learning_rate_schedule(0.1, warmup_steps=4)
    assert [float(warm_only(step)) for step in (1, 4, 100)] == pytest.approx([0.025, 0.1, 0.1])
    decay_only = learning_rate_schedule(0.1, decay_steps=10)
    assert [float(decay_only(step)) for step in (0, 5, 10)] == pytest.approx([0.1, 0.05, 0.0], abs=1e-7)
    assert learning_rate_schedule(0.1) == 0.1  # the papers' constant rate, no schedule object


def test_training_options_are_settings_of_every_single_optimizer_model():
    from tfimpute.models import registry
    from zoo_support import tiny_model

    for name in ("lmrbm", "rbm", "vae", "realnvp"):
        assert {"lr_warmup_steps", "lr_decay_steps", "weight_decay"} <= set(registry.get(name).fields), name
    model = tiny_model("lmrbm", lr_warmup_steps=3, lr_decay_steps=5, weight_decay=0.01)
    optimizer = model.optimizer
    assert optimizer.weight_decay == 0.01 and float(optimizer.learning_rate) == 0.0  # step 0 of the warm-up
    assert model.get_config()["lr_decay_steps"] == 5
    old = {key: value for key, value in model.get_config().items()
           if key not in ("lr_warmup_steps", "lr_decay_steps", "weight_decay")}  # a config written before them
    assert registry.get("lmrbm").cls.upgraded_config(old)["weight_decay"] == 0.0
    with pytest.raises(ValueError, match="weight_decay must be >= 0, got -1"):
        tiny_model("vae", weight_decay=-1)
