"""What a model can do beyond imputing, as small protocols that programs test instead of model classes.

A model has a capability when it has the methods (``isinstance(model, GeneratesSamples)``);
nothing is registered. The shared machinery reads them: :mod:`tfimpute.gan_report`
(``GeneratesSamples``), the evaluation's "RBM †" accuracy (``HasHiddenFeatures``), the
benchmark (``CountsStepFlops``, ``HasExtraBenchmark``) and the training loop's callbacks
(``ShowsEpochImages``, ``HasValidationLoss``).
"""

from __future__ import annotations

import dataclasses
from typing import Protocol, runtime_checkable

import numpy as np
import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class EpochImage:
    """An image a model shows after a training epoch: a TensorBoard image ``tag`` (at ``step``, default
    the training step) and/or a PNG ``file`` (upscaled ``scale`` times)."""

    grid: np.ndarray  # [H, W, C] in [0, 1]
    tag: str | None = None
    file: str | None = None
    scale: int = 3
    step: int | None = None


@dataclasses.dataclass(frozen=True)
class FrontierPoint:
    """One setting of a model's perception–distortion knob (``Imputer.frontier_points``): a ``label``
    for tables and plots and the ``settings`` that differ from the trained model's. Settings that are
    all inference settings are applied to the trained model; a training setting (MisGAN's γ) makes
    ``tfimpute.frontier`` fine-tune the trained model with it."""

    label: str
    settings: dict


@runtime_checkable
class GeneratesSamples(Protocol):
    """A generator of digits from latents (DCGAN, CGAN, MisGAN): what ``gan_report`` measures.

    ``sample`` returns the digits, or (digits, masks) for a model that also generates masks;
    with ``num_classes > 0`` the model is class-conditional and also has
    ``generate_labelled(labels, seed)`` and ``class_grid()``.
    """

    num_classes: int

    def draw_latents(self, count, seed: tf.Tensor) -> tf.Tensor: ...

    def generate(self, latent: tf.Tensor, *args) -> tf.Tensor: ...

    def sample(self, count, seed: tf.Tensor): ...

    def sample_grid(self) -> np.ndarray: ...

    def interpolate(self, start: tf.Tensor, end: tf.Tensor, *args, **kwargs) -> tf.Tensor: ...


@runtime_checkable
class HasHiddenFeatures(Protocol):
    """A hidden representation of incomplete digits (the RBMs' p(h | v_o), the paper's "RBM †")."""

    def hidden(self, images: tf.Tensor, mask: tf.Tensor) -> tf.Tensor: ...


@runtime_checkable
class CountsStepFlops(Protocol):
    """Floating-point work of one training step, so a benchmark can report GFLOP/s."""

    def step_flops(self, batch_size: int) -> float: ...

    def reference_matmul_shape(self, batch_size: int) -> tuple[int, int, int]:
        """(rows, inner, columns) of the step's dominant matrix product, timed alone for comparison."""
        ...


@runtime_checkable
class HasExtraBenchmark(Protocol):
    """A costly inference path worth timing beside the training step (DCGAN's latent search).

    ``benchmark_variants()``: named sets of inference settings whose speed and test RMSE
    ``tfimpute.bench --search_workdir`` compares on a trained workdir's test examples.
    """

    def benchmark_variants(self) -> dict[str, dict]: ...

    def extra_benchmark(self, digits: int) -> dict: ...


@runtime_checkable
class ShowsEpochImages(Protocol):
    """Images to show after each training epoch (sample grids); the training loop writes them."""

    def epoch_images(self, epoch: int, epochs: int) -> list[EpochImage]: ...


@runtime_checkable
class HasValidationLoss(Protocol):
    """A loss on held-out digits, plotted per epoch against the training loss ``loss_name``."""

    loss_name: str
    loss_title: str

    def validation_losses(self, images: np.ndarray, mask: np.ndarray) -> dict[str, float]: ...
