"""Pieces shared by the likelihood-based imputers (VAE and RealNVP, seed ``002_*.txt`` §1 and §3).

* :class:`GenerativeImputer`: implements the training loop's per-epoch hook for
  a model with a validation loss and a ``sample`` method: TensorBoard scalars and
  sample grids, ``curves.json`` and ``curves.png`` (training and validation loss
  per epoch, seed Q1.13 / Q3.8), and samples before, half way through and after
  training (seed Q1.14) as PNGs.
"""

from __future__ import annotations

import json
import os

import numpy as np
import tensorflow as tf
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from tfimpute import visualize
from tfimpute.models.base import Imputer
from tfimpute.training import write_json_atomically

CURVES_FILE = "curves.json"


def _write_curves(workdir: str, epoch: int, values: dict[str, float], title: str) -> dict:
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
    figure.savefig(os.path.join(workdir, "curves.png"), dpi=100)
    return history


class GenerativeImputer(Imputer):
    """An imputer that is also a generative model with a validation loss.

    Subclasses set ``loss_name`` (the ``train_step`` log plotted against its
    validation value) and ``loss_title`` (the curve's y label), and implement
    :meth:`validation_losses` and :meth:`sample`.
    """

    loss_name: str
    loss_title: str
    num_samples_shown = 64  # an 8 x 8 grid

    def sample(self, num: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """``num`` images [num, 28, 28, 1] in [0, 1] from the model, stateless in ``seed``."""
        raise NotImplementedError

    def validation_losses(self, images: np.ndarray, mask: np.ndarray) -> dict[str, float]:
        """Losses on held-out digits; must contain ``loss_name``."""
        raise NotImplementedError

    def epoch_outputs(self, epoch: int, workdir: str) -> None:
        """Model-specific extra files at the end of an epoch (default: none)."""

    def sample_grid(self, seed: int = 0) -> np.ndarray:
        side = int(np.sqrt(self.num_samples_shown))
        images = self.sample(tf.constant(side * side), tf.constant([seed, 0], tf.int32)).numpy()
        return visualize.image_grid([images[i * side:(i + 1) * side] for i in range(side)])

    def end_of_epoch(self, epoch: int, epochs: int, train_logs: dict[str, float],
                     images: np.ndarray, mask: np.ndarray, workdir: str) -> None:
        validation = self.validation_losses(images, mask)
        for name, value in validation.items():
            tf.summary.scalar(f"validation_{name}", value)
        values = {f"validation {name}": value for name, value in validation.items()}
        if self.loss_name in train_logs:
            values["train"] = train_logs[self.loss_name]
        _write_curves(workdir, epoch, values, self.loss_title)

        grid = self.sample_grid()
        tf.summary.image("samples", grid[None])
        if epoch == 1:  # the initial weights are a function of the config (seeded initialisers)
            untrained = type(self).from_config(self.get_config())
            visualize.save_png(untrained.sample_grid(), os.path.join(workdir, "samples_epoch_000.png"))
        if epoch in (max(1, epochs // 2), epochs):
            visualize.save_png(grid, os.path.join(workdir, f"samples_epoch_{epoch:03d}.png"))
        self.epoch_outputs(epoch, workdir)
