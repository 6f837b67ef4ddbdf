"""Callbacks of the training loop: what a model shows after every epoch, written here, not by the model.

They are ``keras.callbacks.Callback`` objects; :func:`tfimpute.training.run_training` calls
``on_epoch_end(epoch, logs)`` (epoch 0-based, ``logs`` the epoch's mean ``train_step`` logs)
with the held-out TensorBoard writer as default writer, after ``set_model`` and
``set_params({"epochs": ...})``. :func:`default_callbacks` picks them by the model's
capabilities (:mod:`tfimpute.models.capabilities`); a caller may add its own.
"""

from __future__ import annotations

import json
import os

import keras
import numpy as np
import tensorflow as tf
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from tfimpute import visualize
from tfimpute.files import write_json_atomically
from tfimpute.models.capabilities import HasValidationLoss, ShowsEpochImages

CURVES_FILE = "curves.json"
CURVES_PLOT = "curves.png"


class EpochImages(keras.callbacks.Callback):
    """Writes the model's ``epoch_images`` to TensorBoard (by tag) and as PNGs in ``workdir`` (by file)."""

    def __init__(self, workdir: str):
        super().__init__()
        self.workdir = workdir

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        for image in self.model.epoch_images(epoch + 1, self.params["epochs"]):
            if image.tag:
                tf.summary.image(image.tag, image.grid[None], step=image.step)
            if image.file:
                visualize.save_png(image.grid, os.path.join(self.workdir, image.file), scale=image.scale)


def write_curves(workdir: str, epoch: int, values: dict[str, float], title: str) -> dict:
    """Merges one epoch's values into ``curves.json`` (keyed by epoch, so resuming is safe) and plots it.

    Drawn on matplotlib's Agg canvas, not pyplot, so training leaves a notebook's backend alone.
    """
    path = os.path.join(workdir, CURVES_FILE)
    history: dict[str, dict[str, float]] = {}
    if os.path.exists(path):
        with open(path) as f:
            history = json.load(f)
    history[str(epoch)] = values
    write_json_atomically(path, history)

    epochs = sorted(int(e) for e in history)
    figure = Figure(figsize=(6, 4))
    FigureCanvasAgg(figure)
    axis = figure.subplots()
    for name in sorted({name for e in epochs for name in history[str(e)]}):
        points = [(e, history[str(e)][name]) for e in epochs if name in history[str(e)]]
        axis.plot(*zip(*points), marker="o", markersize=3, label=name)
    axis.set_xlabel("epoch")
    axis.set_ylabel(title)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(os.path.join(workdir, CURVES_PLOT), dpi=100)
    return history


class LossCurves(keras.callbacks.Callback):
    """Validation losses on held-out digits each epoch: TensorBoard scalars ``validation_*`` and
    ``curves.json`` / ``curves.png`` beside the training loss ``model.loss_name`` (seed Q1.13, Q3.8)."""

    def __init__(self, workdir: str, images: np.ndarray, mask: np.ndarray):
        super().__init__()
        self.workdir, self.images, self.mask = workdir, images, mask

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        validation = self.model.validation_losses(self.images, self.mask)
        for name, value in validation.items():
            tf.summary.scalar(f"validation_{name}", value)
        values = {f"validation {name}": value for name, value in validation.items()}
        if logs and self.model.loss_name in logs:
            values["train"] = logs[self.model.loss_name]
        write_curves(self.workdir, epoch + 1, values, self.model.loss_title)


def default_callbacks(model: keras.Model, workdir: str, images: np.ndarray,
                      mask: np.ndarray) -> list[keras.callbacks.Callback]:
    """The callbacks ``model``'s capabilities call for; ``images`` / ``mask``: held-out examples."""
    callbacks: list[keras.callbacks.Callback] = []
    if isinstance(model, HasValidationLoss):
        callbacks.append(LossCurves(workdir, images, mask))
    if isinstance(model, ShowsEpochImages) and model.is_image_model:  # vectors make no picture
        callbacks.append(EpochImages(workdir))
    return callbacks
