"""SavedModel export: signatures and names, versioned atomic layout, and what other programs see."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from serving_support import digits, rbm_sample, tiny_trained_rbm
from zoo_support import tiny_model
from tfimpute import savedmodel, workdir
from tfimpute.models.base import Imputer, keep_observed

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RBM_SIGNATURES = {
    "serving_default": ({"images": [-1, 28, 28, 1], "mask": [-1, 28, 28, 1]}, {"imputed": [-1, 28, 28, 1]}),
    "impute_sample": ({"images": [-1, 28, 28, 1], "mask": [-1, 28, 28, 1], "seed": [-1]},
                      {"imputed": [-1, 28, 28, 1]}),
    "hidden": ({"images": [-1, 28, 28, 1], "mask": [-1, 28, 28, 1]}, {"hidden": [-1, 16]}),
    "impute_nan": ({"x": [-1, 28, 28, 1]}, {"imputed": [-1, 28, 28, 1]}),
}


@pytest.fixture(scope="module")
def rbm():
    return tiny_trained_rbm()


@pytest.fixture(scope="module")
def exported(rbm, tmp_path_factory) -> str:
    return savedmodel.export_model(rbm, str(tmp_path_factory.mktemp("export")), "lmrbm")


class HalfFill(Imputer):
    """A deterministic imputer with nothing but what Imputer gives (like the mean/inpaint baselines)."""

    trainable_imputer = False

    def impute_batch(self, images, mask, seed):
        return keep_observed(images, mask, tf.fill(tf.shape(images), 0.5))


def _signature_shapes(path: str) -> dict:
    loaded = tf.saved_model.load(path)
    shapes = {}
    for name, fn in loaded.signatures.items():
        inputs = {k: spec.shape.as_list() for k, spec in fn.structured_input_signature[1].items()}
        outputs = {k: spec.shape.as_list() for k, spec in fn.structured_outputs.items()}
        shapes[name] = ({k: [-1 if d is None else d for d in v] for k, v in inputs.items()},
                        {k: [-1 if d is None else d for d in v] for k, v in outputs.items()})
    return shapes


def test_rbm_export_has_named_signatures_in_tf_serving_layout(exported):
    assert exported.endswith(os.path.join("lmrbm", "1"))
    assert _signature_shapes(exported) == RBM_SIGNATURES
    assert os.listdir(os.path.dirname(exported)) == ["1"]  # no temporary directory left behind
    extra = os.path.join(exported, "assets.extra")
    assert os.path.getsize(os.path.join(extra, "tf_serving_warmup_requests")) > 0
    with open(os.path.join(extra, "tfimpute.json")) as f:
        info = json.load(f)
    assert info["class"] == "RBM" and set(info["signatures"]) == set(RBM_SIGNATURES)


def test_versions_count_up_and_are_never_overwritten(rbm, tmp_path):
    assert savedmodel.export_model(rbm, str(tmp_path), "lmrbm").endswith("1")
    assert savedmodel.export_model(rbm, str(tmp_path), "lmrbm").endswith("2")
    assert savedmodel.export_model(rbm, str(tmp_path), "lmrbm", version=7).endswith("7")
    assert savedmodel.next_version(str(tmp_path / "lmrbm")) == 8
    with pytest.raises(savedmodel.ExportError, match="already exists"):
        savedmodel.export_model(rbm, str(tmp_path), "lmrbm", version=2)


def test_an_export_that_fails_its_check_leaves_nothing(rbm, tmp_path, monkeypatch):
    def failing_check(path, signatures, **options):
        raise savedmodel.ExportError("simulated mismatch")

    monkeypatch.setattr(savedmodel, "check_export", failing_check)
    with pytest.raises(savedmodel.ExportError, match="simulated"):
        savedmodel.export_model(rbm, str(tmp_path), "lmrbm")
    assert os.listdir(tmp_path / "lmrbm") == []


def test_plain_imputer_exports_through_the_generic_path(tmp_path):
    model = HalfFill()
    path = savedmodel.export_model(model, str(tmp_path), "half")
    assert _signature_shapes(path) == {name: RBM_SIGNATURES[name] for name in ("serving_default", "impute_nan")}
    images, mask = digits(2)
    served = tf.saved_model.load(path).signatures["serving_default"](images=images, mask=mask)["imputed"]
    np.testing.assert_array_equal(served.numpy(), model.impute(images, mask))


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> dict:
    """The models whose specific signatures are checked here, tiny, exported: {name: (model, signatures)}."""
    root = str(tmp_path_factory.mktemp("zoo"))
    models = {name: tiny_model(name, seed=0) for name in ("vae", "realnvp", "misgan")}
    return {name: (model, tf.saved_model.load(savedmodel.export_model(model, root, name)).signatures)
            for name, model in models.items()}


def test_draws_depend_on_each_digits_seed_only(zoo):
    vae, signatures = zoo["vae"]
    images, mask = digits(3, seed=8)
    seeds = [3, 4, 5]
    sampled = signatures["sample"](seed=tf.constant(seeds))["images"].numpy()
    np.testing.assert_allclose(signatures["sample"](seed=tf.constant([4]))["images"][0], sampled[1], atol=1e-6)
    np.testing.assert_allclose(sampled[1], vae.sample(tf.constant(1), tf.constant([4, 0]))[0], atol=1e-5)
    imputed = signatures["impute_sample"](images=images, mask=mask, seed=tf.constant(seeds))["imputed"].numpy()
    default = signatures["serving_default"](images=images, mask=mask)["imputed"].numpy()
    for i, seed in enumerate(seeds):
        np.testing.assert_allclose(imputed[i], vae.impute(images[i:i + 1], mask[i:i + 1], seed=seed)[0], atol=1e-5)
        np.testing.assert_allclose(default[i], vae.impute(images[i:i + 1], mask[i:i + 1], seed=0)[0], atol=1e-5)
    misgan, signatures = zoo["misgan"]
    generated = signatures["sample"](seed=tf.constant([7]))
    expected_images, expected_masks = misgan.sample(1, tf.constant([7, 0]))
    np.testing.assert_allclose(generated["images"], expected_images, atol=1e-5)
    np.testing.assert_allclose(generated["masks"], expected_masks, atol=1e-5)


def test_model_specific_signatures_compute_the_model_methods(zoo):
    images, mask = digits(2, seed=9)
    realnvp, signatures = zoo["realnvp"]
    np.testing.assert_allclose(signatures["log_prob"](images=images)["log_prob"], realnvp.log_prob(images), rtol=1e-4)
    vae, signatures = zoo["vae"]
    encoded = signatures["encode"](images=images, mask=mask)
    mean, log_variance = vae.encode(images, mask)
    np.testing.assert_allclose(encoded["z_mean"], mean, atol=1e-5)
    np.testing.assert_allclose(encoded["z_log_variance"], log_variance, atol=1e-5)
    z = np.float32([[0.5, -1.0], [0.0, 2.0]])
    np.testing.assert_allclose(signatures["decode"](z=z)["images"], vae.decode(z), atol=1e-5)


def test_export_rejects_bad_names_and_versions(rbm, tmp_path):
    with pytest.raises(ValueError, match="model name"):
        savedmodel.export_model(rbm, str(tmp_path), "../escape")
    with pytest.raises(ValueError, match="version"):
        savedmodel.export_model(rbm, str(tmp_path), "lmrbm", version=0)


def test_graph_rejects_invalid_inputs_like_tf_serving_would(exported):
    serve = tf.saved_model.load(exported).signatures["serving_default"]
    images, mask = digits(2)
    bad_cases = {
        "NaN": (np.where(mask > 0, np.nan, images).astype(np.float32), mask),
        "in \\[0, 1\\]": (images + 1.5, mask),
        "0 \\(missing\\) or 1": (images, mask * 0.5),
        "same shape": (images, mask[:1]),
    }
    for message, (bad_images, bad_mask) in bad_cases.items():
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            serve(images=tf.constant(bad_images), mask=tf.constant(bad_mask))


def test_separate_process_without_tfimpute_gets_the_keras_outputs(rbm, exported, tmp_path):
    images, mask = digits(4, seed=3)
    seeds = np.array([5, 6, 7, 8], np.int32)
    np.savez(tmp_path / "inputs.npz", images=images, mask=mask, seed=seeds)
    script = tmp_path / "load_export.py"
    script.write_text(textwrap.dedent("""
        import importlib.abc, sys

        class NoTfimpute(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name.split(".")[0] == "tfimpute":
                    raise ImportError("tfimpute is blocked in this process")

        sys.meta_path.insert(0, NoTfimpute())
        try:
            import tfimpute
            sys.exit("tfimpute was importable")
        except ImportError:
            pass
        import numpy as np
        import tensorflow as tf

        export_path, inputs_path, outputs_path = sys.argv[1:]
        data = np.load(inputs_path)
        signatures = tf.saved_model.load(export_path).signatures
        images, mask = tf.constant(data["images"]), tf.constant(data["mask"])
        np.savez(outputs_path,
                 imputed=signatures["serving_default"](images=images, mask=mask)["imputed"].numpy(),
                 sampled=signatures["impute_sample"](images=images, mask=mask,
                                                     seed=tf.constant(data["seed"]))["imputed"].numpy(),
                 hidden=signatures["hidden"](images=images, mask=mask)["hidden"].numpy())
    """))
    subprocess.run([sys.executable, str(script), exported, str(tmp_path / "inputs.npz"),
                    str(tmp_path / "outputs.npz")], check=True, cwd=tmp_path, timeout=300)
    outputs = np.load(tmp_path / "outputs.npz")
    np.testing.assert_allclose(outputs["imputed"], rbm.impute(images, mask), atol=1e-6)
    np.testing.assert_allclose(outputs["sampled"], rbm_sample(rbm, images, mask, seeds.tolist()), atol=1e-6)
    np.testing.assert_allclose(outputs["hidden"], rbm.hidden(images, mask).numpy(), atol=1e-6)
    observed = mask > 0
    np.testing.assert_array_equal(outputs["sampled"][observed], images[observed])


def saved_model_cli() -> str:
    """TensorFlow's own console script, beside this interpreter (a venv's bin/ or pyenv's)."""
    beside = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    return beside if os.path.exists(beside) else shutil.which("saved_model_cli")


def test_saved_model_cli_shows_and_runs_the_export(rbm, exported, tmp_path):
    shown = subprocess.run([saved_model_cli(), "show", "--all", "--dir", exported],
                           capture_output=True, text=True, check=True, timeout=300).stdout
    for signature in RBM_SIGNATURES:
        assert f"signature_def['{signature}']" in shown
    for name in ("inputs['images']", "inputs['mask']", "inputs['seed']", "outputs['imputed']",
                 "outputs['hidden']"):
        assert name in shown
    assert "args_0" not in shown and "output_0" not in shown
    images, mask = digits(2, seed=4)
    np.save(tmp_path / "images.npy", images)
    np.save(tmp_path / "mask.npy", mask)
    subprocess.run([saved_model_cli(), "run", "--dir", exported, "--tag_set", "serve",
                    "--signature_def", "serving_default",
                    "--inputs", f"images={tmp_path / 'images.npy'};mask={tmp_path / 'mask.npy'}",
                    "--outdir", str(tmp_path / "out")], capture_output=True, check=True, timeout=300)
    np.testing.assert_allclose(np.load(tmp_path / "out" / "imputed.npy"), rbm.impute(images, mask), atol=1e-6)


def test_export_cli_exports_a_training_workdir(rbm, tmp_path):
    run_dir = tmp_path / "run"
    workdir.claim(str(run_dir), {"model": "lmrbm", "model_config": rbm.get_config()})
    tf.train.CheckpointManager(tf.train.Checkpoint(model=rbm), str(run_dir / "checkpoints"),
                               max_to_keep=1).save()
    command = [sys.executable, "-m", "tfimpute.export", "--model=lmrbm", f"--workdir={run_dir}",
               f"--export_dir={tmp_path / 'out'}"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "exported lmrbm version 1" in done.stdout
    images, mask = digits(2)
    served = tf.saved_model.load(str(tmp_path / "out" / "lmrbm" / "1")).signatures["serving_default"](
        images=images, mask=mask)["imputed"]
    np.testing.assert_allclose(served.numpy(), rbm.impute(images, mask), atol=1e-6)
