"""Mixed precision (tfimpute.precision): every model trains under every dtype policy with float32
parameters and float32 outputs, a checkpoint moves between policies, exports stay float32, and the
RBM's low-precision CD-1 step agrees with its float32 step."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tfimpute import precision, savedmodel
from tfimpute.models.rbm import RBM
from tfimpute.signatures import DEFAULT_SIGNATURE
from zoo_support import tiny_model, trainable_names

SHAPE = (8, 6, 1)


def batch(size: int = 8, seed: int = 0) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    rng = np.random.default_rng(seed)
    images = (rng.random((size, *SHAPE)) < 0.3).astype(np.float32)
    mask = (rng.random((size, *SHAPE)) > 0.4).astype(np.float32)
    return tf.constant(images * mask), tf.constant(mask), tf.constant(np.arange(size) % 3, tf.int32)


def built(name: str, policy: str):
    with precision.policy_scope(policy):
        model = tiny_model(name, data_shape=SHAPE)
    model.build_optimizers()
    return model


@pytest.mark.parametrize("name", trainable_names())
def test_every_model_trains_under_mixed_bfloat16_and_its_checkpoint_restores_under_float32(name, tmp_path):
    model = built(name, "mixed_bfloat16")
    assert model.dtype_policy.name == "mixed_bfloat16"
    step = tf.function(model.train_step)
    for _ in range(2):
        logs = step(batch())
    assert all(np.isfinite(float(value)) for value in logs.values())
    assert {variable.dtype for variable in model.variables} <= {"float32", "int64", "int32"}
    observed, mask, _ = batch(4, seed=1)
    imputed = model.impute(observed.numpy(), mask.numpy())
    assert imputed.dtype == np.float32
    np.testing.assert_array_equal(imputed[mask.numpy() > 0.5], observed.numpy()[mask.numpy() > 0.5])

    path = tf.train.Checkpoint(model=model).save(str(tmp_path / "ckpt"))
    restored = built(name, precision.FLOAT32)
    tf.train.Checkpoint(model=restored).restore(path).assert_existing_objects_matched()
    for saved, loaded in zip(model.variables, restored.variables):
        np.testing.assert_array_equal(saved.numpy(), loaded.numpy())


def test_the_keras_policy_is_restored_after_the_scope():
    with precision.policy_scope("mixed_float16"):
        pass
    assert tf.keras.mixed_precision.global_policy().name == precision.FLOAT32
    with pytest.raises(ValueError, match="dtype policy must be one of"):
        with precision.policy_scope("float8"):
            pass


def test_float16_scales_the_loss_and_applies_the_unscaled_gradient():
    """One VAE step under mixed_float16 moves the weights as the float32 step does (loss scaling
    multiplies the loss by 1024 and divides the gradients back), to float16's precision."""
    steps = {}
    for policy in (precision.FLOAT32, "mixed_float16"):
        model = built("vae", policy)
        before = [v.numpy() for v in model.trainable_variables]
        model.train_step(batch())
        steps[policy] = [v.numpy() - b for v, b in zip(model.trainable_variables, before)]
    assert built("vae", "mixed_float16").optimizer.loss_scale_factor == precision.FLOAT16_LOSS_SCALE
    assert built("lmrbm", "mixed_float16").optimizer.loss_scale_factor is None  # CD-1: no loss to scale
    for full, half in zip(steps[precision.FLOAT32], steps["mixed_float16"]):
        np.testing.assert_allclose(half, full, atol=2e-4 + 0.05 * np.abs(full).max())


def test_bfloat16_cd1_matches_float32_to_bfloat16_precision():
    """With the same weights and CD-1 draws: p(h | v_o) within bfloat16's rounding, and the summed
    updates close to float32's (a few near-threshold hidden samples flip, each moving a column of ΔW)."""
    rng = np.random.default_rng(0)
    images = (rng.random((64, 28, 28, 1)) < 0.2).astype(np.float32)
    mask = (rng.random(images.shape) > 0.5).astype(np.float32)
    visible, observed_mask = (tf.reshape(tf.constant(x), [64, -1]) for x in (images, mask))
    results = {}
    for policy in (precision.FLOAT32, "mixed_bfloat16"):
        with precision.policy_scope(policy):
            model = RBM(hidden_units=64, seed=3)
        model.visible_bias.assign(np.random.default_rng(1).normal(0, 1, 784).astype(np.float32))
        model.kernel.assign(np.random.default_rng(2).normal(0, 0.1, (784, 64)).astype(np.float32))
        updates = model.cd_updates(visible, observed_mask, model.cd_uniforms(64, 0))
        results[policy] = (model.hidden_probabilities(visible, observed_mask).numpy(),
                           {name: value.numpy() for name, value in updates.items()})
    (full_hidden, full), (low_hidden, low) = results[precision.FLOAT32], results["mixed_bfloat16"]
    np.testing.assert_allclose(low_hidden, full_hidden, atol=5e-3)
    assert not np.array_equal(low_hidden, full_hidden)  # the products did run in bfloat16
    for name in ("weight", "visible_bias"):
        assert np.linalg.norm(low[name] - full[name]) < 0.1 * np.linalg.norm(full[name]), name
    np.testing.assert_allclose(low["squared_error"], full["squared_error"], rtol=0.01)


def test_a_model_trained_under_bfloat16_exports_float32(tmp_path):
    model = built("lmrbm", "mixed_bfloat16")
    model.train_step(batch())
    path = savedmodel.export_model(model, str(tmp_path), "lmrbm")
    observed, mask, _ = batch(3, seed=2)
    signature = tf.saved_model.load(path).signatures[DEFAULT_SIGNATURE]
    assert signature.structured_input_signature[1]["images"].dtype == tf.float32
    imputed = signature(images=observed, mask=mask)["imputed"]
    assert imputed.dtype == tf.float32
    np.testing.assert_allclose(imputed.numpy(), model.impute(observed.numpy(), mask.numpy()), atol=1e-6)
