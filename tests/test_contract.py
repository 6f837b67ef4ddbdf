"""The contract every registered model keeps, checked for each with its own tiny settings.

A newly registered model is covered here without editing any test: config round trip,
two training steps, observed pixels never changed by ``impute``, export + reload giving
the model's outputs, and a mirrored step equal to the single-device step.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import tensorflow as tf
from test_distribute import check_mirrored_step_equals_single_device_step
from zoo_support import tiny_model, trainable_names

from tfimpute import masks, savedmodel
from tfimpute.datasets import Codec
from tfimpute.errors import InvalidInputError
from tfimpute.models import registry
from tfimpute.signatures import DEFAULT_SIGNATURE, NAN_SIGNATURE

NAMES = registry.names()


def incomplete_digits(n=6, seed=0, shape=(28, 28, 1)):
    rng = np.random.default_rng(seed)
    images = rng.random((n, *shape)).astype(np.float32)
    mask = (rng.random((n, *shape)) > 0.4).astype(np.float32)
    return masks.make_incomplete(images, mask, np.arange(n) % 10), images


def test_the_zoo_is_registered():
    assert {"lmrbm", "rbm", "mean", "inpaint", "vae", "realnvp", "misgan", "dcgan", "cgan"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_config_round_trip_rebuilds_the_same_model(name):
    model = tiny_model(name)
    config = model.get_config()
    rebuilt = registry.get(name).from_config(config)
    assert rebuilt.get_config() == config
    for a, b in zip(model.get_weights(), rebuilt.get_weights(), strict=True):  # seeded initialisers
        np.testing.assert_array_equal(a, b)
    fields = registry.get(name).fields
    assert set(fields) <= set(config), "every setting is in get_config()"


@pytest.mark.parametrize("name", NAMES)
def test_frontier_points_are_settings_the_model_takes(name):
    """Every setting of the model's perception–distortion knob is one of its settings, and the model
    builds with it (so ``tfimpute.evaluate --frontier`` can load or fine-tune it)."""
    spec = registry.get(name)
    for point in spec.cls.frontier_points:
        assert point.settings and set(point.settings) <= set(spec.fields), point
        assert tiny_model(name, **point.settings).get_config().items() >= point.settings.items(), point


@pytest.mark.parametrize("name", NAMES)
def test_two_training_steps_move_a_trainable_model_and_impute_keeps_observed_pixels(name):
    model = tiny_model(name)
    data, images = incomplete_digits()
    model.prepare(data)
    before = [w.copy() for w in model.get_weights()]
    if model.trainable_imputer:
        model.build_optimizers()
        step = tf.function(lambda batch: model.distributed_train_step(tf.distribute.get_strategy(), batch))
        batch = (tf.constant(data.observed), tf.constant(data.mask), tf.constant(data.label_array()))
        for _ in range(2):
            logs = step(batch)
        assert logs and all(np.isfinite(float(v)) for v in logs.values())
        assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    imputed = model.impute(data.observed, data.mask, seed=3)
    observed = data.mask > 0.5
    np.testing.assert_array_equal(imputed[observed], images[observed])
    assert np.all(np.isfinite(imputed)) and imputed.min() >= 0.0 and imputed.max() <= 1.0


@pytest.mark.parametrize("name", NAMES)
def test_export_and_reload_give_the_model_outputs(name, tmp_path):
    model = tiny_model(name)
    data, _ = incomplete_digits(3, seed=1)
    model.prepare(data)
    path = savedmodel.export_model(model, str(tmp_path), name)  # checks every signature on probe inputs
    loaded = tf.saved_model.load(path)
    assert DEFAULT_SIGNATURE in loaded.signatures
    assert set(loaded.signatures) == set(model.serving_signatures()) | {NAN_SIGNATURE}
    for signature in loaded.signatures.values():  # every input and output is named
        assert not any(re.fullmatch(r"(args|output)_\d+", key)
                       for key in [*signature.structured_input_signature[1], *signature.structured_outputs])
    served = loaded.signatures[DEFAULT_SIGNATURE](images=tf.constant(data.observed),
                                                  mask=tf.constant(data.mask))["imputed"].numpy()
    direct = model.serving_signatures()[DEFAULT_SIGNATURE].function(
        images=tf.constant(data.observed), mask=tf.constant(data.mask))["imputed"].numpy()
    np.testing.assert_allclose(served, direct, rtol=1e-4, atol=1e-5)


# An odd-sized RGB image and a vector: every model works on the data's shape or refuses vectors.
OTHER_SHAPES = [(9, 11, 3), (13,)]


@pytest.mark.parametrize("shape", OTHER_SHAPES, ids=["image_9x11x3", "vector_13"])
@pytest.mark.parametrize("name", NAMES)
def test_any_shape_trains_imputes_and_exports_impute_nan(name, shape, tmp_path):
    spec = registry.get(name)
    if len(shape) == 1 and not spec.cls.accepts_vectors:
        with pytest.raises(InvalidInputError, match=rf"--model={name} works on images \[H, W, C\] only; "
                                                    r"the data are vectors of 13 values \(models for vectors: "):
            tiny_model(name, data_shape=shape)
        return
    model = tiny_model(name, data_shape=shape)
    data, images = incomplete_digits(6, seed=2, shape=shape)
    model.prepare(data)
    if model.trainable_imputer:
        model.build_optimizers()
        step = tf.function(lambda batch: model.distributed_train_step(tf.distribute.get_strategy(), batch))
        logs = step((tf.constant(data.observed), tf.constant(data.mask), tf.constant(data.label_array())))
        assert all(np.isfinite(float(v)) for v in logs.values())
    imputed = model.impute(data.observed, data.mask, seed=3)
    observed = data.mask > 0.5
    assert imputed.shape == (6, *shape)
    np.testing.assert_array_equal(imputed[observed], images[observed])
    assert np.all(np.isfinite(imputed)) and imputed.min() >= 0.0 and imputed.max() <= 1.0
    # impute_nan: raw values with NaN in; the scaling (here raw = 10 * scaled - 5) is in the graph.
    codec = Codec("image" if len(shape) == 3 else "table", shape, np.full(int(np.prod(shape)), -5.0),
                  np.full(int(np.prod(shape)), 10.0),
                  () if len(shape) == 3 else tuple({"name": f"c{j}", "kind": "numeric", "start": j, "width": 1}
                                                    for j in range(shape[0])))
    path = savedmodel.export_model(model, str(tmp_path), name, codec=codec)
    raw = np.where(observed, images * 10.0 - 5.0, np.nan).astype(np.float32)
    filled = tf.saved_model.load(path).signatures[NAN_SIGNATURE](x=tf.constant(raw))["imputed"].numpy()
    np.testing.assert_array_equal(filled[observed], raw[observed])
    np.testing.assert_allclose(filled, model.impute(data.observed, data.mask) * 10.0 - 5.0, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", trainable_names())
def test_a_mirrored_step_equals_the_single_device_step(mirrored, name):
    check_mirrored_step_equals_single_device_step(mirrored, name)


@pytest.fixture
def mirrored():
    from test_distribute import strategy_named

    return strategy_named("mirrored")
