"""Serving signatures: the named, input-checked endpoints a model exports for TF Serving.

The building blocks every model's :meth:`~tfimpute.models.base.Imputer.serving_signatures`
uses (the export knows no model): a :class:`ServingSignature` is ``function(**inputs) ->
{output name: tensor}`` traced with ``inputs``' specs. ``images`` are float32 ``[batch, *data_shape]``
(the model's example shape: [H, W, C] images or [D] vectors) in [0, 1], masks the same shape with
1 = observed, ``seed`` int32 ``[batch]`` (one per example, so it fits TF Serving's row format).
:func:`impute_nan_signature` takes raw values with NaN for missing entries instead.

Every signature checks its inputs in the graph (finite pixels in [0, 1], masks in {0, 1},
matching shapes), so TF Serving itself answers a bad request with INVALID_ARGUMENT
(HTTP 400) instead of imputing garbage.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np
import tensorflow as tf

# The signature TF Serving runs when a request names none (shared by export, server and client).
DEFAULT_SIGNATURE = "serving_default"
NAN_SIGNATURE = "impute_nan"


def default_seed(seed: int = 0) -> tf.Tensor:
    return tf.constant([seed, 0], dtype=tf.int32)


def checked_classes(labels: tf.Tensor, num_classes: int) -> tf.Tensor:
    """``labels`` (int32), with a graph assertion that every one is a class 0..num_classes − 1."""
    check = tf.debugging.Assert(tf.reduce_all((labels >= 0) & (labels < num_classes)),
                                [f"labels: values must be classes 0..{num_classes - 1}"])
    with tf.control_dependencies([check]):
        return tf.identity(labels)


@dataclasses.dataclass(frozen=True)
class ServingSignature:
    """One endpoint: ``function(**inputs) -> {output name: tensor}``, traced with ``inputs``' specs."""

    inputs: dict[str, tf.TensorSpec]
    function: Callable[..., dict[str, tf.Tensor]]
    description: str


def image_inputs(data_shape: tuple[int, ...]) -> dict[str, tf.TensorSpec]:
    """The ``images`` and ``mask`` inputs [batch, *data_shape] every imputation signature takes."""
    return {"images": tf.TensorSpec([None, *data_shape], tf.float32, name="images"),
            "mask": tf.TensorSpec([None, *data_shape], tf.float32, name="mask")}


def label_input() -> dict[str, tf.TensorSpec]:
    """One int32 class ``labels`` (0 to num_classes - 1) per example."""
    return {"labels": tf.TensorSpec([None], tf.int32, name="labels")}


def checked_labels(labels: tf.Tensor, batch_like: tf.Tensor, num_classes: int) -> tf.Tensor:
    one_per_example = tf.debugging.assert_equal(tf.shape(labels)[0], tf.shape(batch_like)[0],
                                                message="labels must hold one value per example")
    with tf.control_dependencies([one_per_example]):
        return checked_classes(labels, num_classes)


def per_row_seeds(seed: tf.Tensor) -> tf.Tensor:
    """int32 [B, 2] search seeds (seed[i], 0): what ``model.impute(row i, seed=seed[i])`` uses."""
    return tf.stack([seed, tf.zeros_like(seed)], axis=1)


def seed_input() -> dict[str, tf.TensorSpec]:
    """One int32 ``seed`` per example (shape [batch]), so it fits TF Serving's row format."""
    return {"seed": tf.TensorSpec([None], tf.int32, name="seed")}


def checked_images(images: tf.Tensor) -> tf.Tensor:
    """``images`` once they are known finite and in [0, 1] (messages of :mod:`tfimpute.validation`)."""
    images = tf.debugging.check_numerics(images, "images: contains NaN or infinite values")
    checks = [tf.debugging.assert_greater_equal(images, 0.0, message="images: pixel values must be in [0, 1]"),
              tf.debugging.assert_less_equal(images, 1.0, message="images: pixel values must be in [0, 1]")]
    with tf.control_dependencies(checks):
        return tf.identity(images)


def checked_images_and_mask(images: tf.Tensor, mask: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """In-graph version of :func:`tfimpute.validation.check_images_and_mask` (same messages).

    Failing checks raise InvalidArgumentError, which TF Serving reports as
    INVALID_ARGUMENT / HTTP 400.
    """
    checks = [
        tf.debugging.assert_equal(tf.shape(images), tf.shape(mask),
                                  message="images and mask must have the same shape"),
        tf.debugging.Assert(tf.reduce_all((mask == 0.0) | (mask == 1.0)),
                            ["mask: values must be 0 (missing) or 1 (observed)"]),
    ]
    with tf.control_dependencies(checks):
        return checked_images(images), tf.identity(mask)


def checked_seed(seed: tf.Tensor, batch_like: tf.Tensor) -> tf.Tensor:
    check = tf.debugging.assert_equal(tf.shape(seed)[0], tf.shape(batch_like)[0],
                                      message="seed must hold one value per image")
    with tf.control_dependencies([check]):
        return tf.identity(seed)


ImputeFn = Callable[[tf.Tensor, tf.Tensor, tf.Tensor], tf.Tensor]


def impute_each(impute_fn: ImputeFn, images: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor,
                data_shape: tuple[int, ...]) -> tf.Tensor:
    """Row i = ``impute_fn`` on example i alone with seed (seed[i], 0), i.e. ``Imputer.impute`` of that example.

    An example's draws then depend on its own seed only, not on the rest of the batch.
    """

    def impute_one(example: tuple[tf.Tensor, tf.Tensor, tf.Tensor]) -> tf.Tensor:
        values, example_mask, example_seed = example
        return impute_fn(values[None], example_mask[None], tf.stack([example_seed, 0]))[0]

    return tf.map_fn(impute_one, (images, mask, seed),
                     fn_output_signature=tf.TensorSpec(data_shape, tf.float32))


def impute_signature(impute_fn: ImputeFn, description: str, data_shape: tuple[int, ...]) -> ServingSignature:
    """``images``, ``mask`` -> ``imputed``: ``impute_fn`` on the batch at the fixed seed (0, 0)."""

    def impute(images: tf.Tensor, mask: tf.Tensor) -> dict[str, tf.Tensor]:
        images, mask = checked_images_and_mask(images, mask)
        return {"imputed": impute_fn(images, mask, default_seed(0))}

    return ServingSignature(image_inputs(data_shape), impute, description)


def seeded_impute_signature(impute_fn: ImputeFn, description: str,
                            data_shape: tuple[int, ...]) -> ServingSignature:
    """``images``, ``mask``, ``seed`` -> ``imputed``, each example imputed alone with its seed."""

    def impute(images: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor) -> dict[str, tf.Tensor]:
        images, mask = checked_images_and_mask(images, mask)
        return {"imputed": impute_each(impute_fn, images, mask, checked_seed(seed, images), data_shape)}

    return ServingSignature({**image_inputs(data_shape), **seed_input()}, impute, description)


def stochastic_impute_signatures(impute_fn: ImputeFn, data_shape: tuple[int, ...]) -> dict[str, ServingSignature]:
    """For imputers that draw: each example alone, with seed 0 (``serving_default``) or its own seed."""

    def impute(images: tf.Tensor, mask: tf.Tensor) -> dict[str, tf.Tensor]:
        images, mask = checked_images_and_mask(images, mask)
        return {"imputed": impute_each(impute_fn, images, mask, tf.zeros(tf.shape(images)[:1], tf.int32),
                                       data_shape)}

    return {DEFAULT_SIGNATURE: ServingSignature(image_inputs(data_shape), impute,
                                                "each example imputed alone with seed 0"),
            "impute_sample": seeded_impute_signature(impute_fn, "each example imputed alone with its seed",
                                                     data_shape)}


def sample_signature(sample_fn: Callable[[tf.Tensor, tf.Tensor], Any], output_names: list[str],
                     description: str, data_shape: tuple[int, ...]) -> ServingSignature:
    """``seed`` -> generated examples: row i = ``sample_fn(1, (seed[i], 0))``, one named output per returned tensor."""

    def sample_one(seed: tf.Tensor) -> dict[str, tf.Tensor]:
        samples = sample_fn(tf.constant(1), tf.stack([seed, 0]))
        samples = samples if isinstance(samples, (tuple, list)) else [samples]
        return {name: tf.reshape(tensor, data_shape) for name, tensor in zip(output_names, samples)}

    def sample(seed: tf.Tensor) -> dict[str, tf.Tensor]:
        image_spec = tf.TensorSpec(data_shape, tf.float32)
        return tf.map_fn(sample_one, seed, fn_output_signature={name: image_spec for name in output_names})

    return ServingSignature(seed_input(), sample, description)


def impute_nan_signature(impute_fn: ImputeFn, data_shape: tuple[int, ...], offset, scale,
                         categorical_blocks: list[tuple[int, int]] = ()) -> ServingSignature:
    """``x`` (raw units, NaN = missing) -> ``imputed`` (raw units, no NaN, observed entries unchanged).

    The scaling to the model's [0, 1] (``scaled = (raw - offset) / scale``, clipped: new data may
    leave the training range) and back happens in the graph; ``impute_fn`` runs at the fixed seed
    (0, 0). A one-hot block of a categorical column (vectors: ``(start, width)``) comes back as the
    one-hot of its most probable category.
    """
    offset = tf.constant(np.reshape(offset, data_shape), tf.float32)
    scale = tf.constant(np.reshape(scale, data_shape), tf.float32)

    def impute_nan(x: tf.Tensor) -> dict[str, tf.Tensor]:
        observed = tf.logical_not(tf.math.is_nan(x))
        finite = tf.debugging.Assert(tf.reduce_all(tf.math.is_finite(tf.where(observed, x, 0.0))),
                                     ["x: contains infinite values (NaN marks a missing entry)"])
        with tf.control_dependencies([finite]):
            mask = tf.cast(observed, tf.float32)
        scaled = tf.clip_by_value((tf.where(observed, x, offset) - offset) / scale, 0.0, 1.0) * mask
        filled = impute_fn(scaled, mask, default_seed(0)) * scale + offset
        if categorical_blocks:
            parts, position = [], 0
            for start, width in categorical_blocks:
                parts += [filled[:, position:start],
                          tf.one_hot(tf.argmax(filled[:, start:start + width], axis=1), width)]
                position = start + width
            filled = tf.concat(parts + [filled[:, position:]], axis=1)
        return {"imputed": tf.where(observed, x, filled)}

    return ServingSignature({"x": tf.TensorSpec([None, *data_shape], tf.float32, name="x")}, impute_nan,
                            "raw values with NaN for missing entries -> filled raw values")
