"""The interface every imputer of the zoo implements (models and untrained baselines).

An imputer is a Keras model with

* ``impute_batch(images, mask, seed)``: traceable TensorFlow function on float32
  tensors [B, *data_shape] (mask: 1 = observed); returns imputed examples in which
  every observed pixel is exactly the input pixel. ``seed`` is an int32 [2]
  tensor for stateless randomness, so a call can be reproduced (exported models
  take it as an input). Deterministic imputers ignore it.
* ``prepare(train_data)``: one-off set-up from the incomplete training data
  before the first epoch (statistics such as the observation probabilities).
* ``train_step(batch)``: one update from a batch ``(observed, mask, labels)``;
  returns a dict of scalar logs. Under ``tf.distribute`` it runs on every replica
  with that replica's slice of the global batch (see :mod:`tfimpute.models.replicas`),
  and each log is the replica's SHARE: summed over replicas it is the log of the
  global batch (e.g. a batch mean via ``replica_mean``). Untrained imputers set
  ``trainable_imputer = False``.
* ``distributed_train_step(strategy, batch)``: one step in cross-replica context
  (the training loop calls it inside a ``tf.function``); by default ``train_step``
  on every replica, logs summed.
* ``compile()``: with no arguments, the model's own optimizer(s) from its settings
  (keras-io's WGAN-GP pattern: a GAN's ``compile`` takes one optimizer per player).
* ``serving_signatures()``: the endpoints the export writes (:mod:`tfimpute.signatures`);
  a subclass extends its parent's.
* settings and registration: see :mod:`tfimpute.models.registry`.

What a model can do beyond imputing is declared by the protocols of
:mod:`tfimpute.models.capabilities` (generates samples, has hidden features, shows
images after every epoch, ...), which programs test instead of model classes.

``impute(images, mask)`` is the public NumPy entry point: it validates input,
batches it and returns a NumPy array.
"""

from __future__ import annotations

from typing import Annotated

import keras
import numpy as np
import tensorflow as tf

from tfimpute import precision, signatures
from tfimpute.data import MNIST_SHAPE
from tfimpute.masks import TrainingExamples
from tfimpute.models.capabilities import FrontierPoint
from tfimpute.models.registry import Setting, settings_of
from tfimpute.validation import check_images_and_mask


def keep_observed(images: tf.Tensor, mask: tf.Tensor, filled: tf.Tensor) -> tf.Tensor:
    """Observed pixels from ``images``, missing ones from ``filled`` (exactly, not by arithmetic)."""
    return tf.where(mask > 0.5, images, filled)


def sum_over_replicas(strategy: tf.distribute.Strategy, logs: dict) -> dict[str, tf.Tensor]:
    """Per-replica log shares summed into the global-batch logs (cross-replica context)."""
    return {name: strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)
            for name, value in logs.items()}


OPTIMIZERS = ("sgd", "adam")


def check_optimizer_name(name: str) -> str:
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {name!r}")
    return name


def learning_rate_schedule(learning_rate: float, warmup_steps: int = 0,
                           decay_steps: int = 0) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """``learning_rate``, or Keras's ``CosineDecay`` when a warm-up or a decay is asked for: linear
    from 0 to ``learning_rate`` over ``warmup_steps``, then a cosine to 0 over ``decay_steps``
    (none: ``learning_rate`` from then on, through ``alpha = 1``)."""
    if not warmup_steps and not decay_steps:
        return learning_rate
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup_steps else learning_rate, decay_steps=max(decay_steps, 1),
        alpha=0.0 if decay_steps else 1.0, warmup_target=learning_rate if warmup_steps else None,
        warmup_steps=warmup_steps)


def make_optimizer(name: str, learning_rate: float, momentum: float = 0.0,
                   loss_scale_factor: float | None = None, warmup_steps: int = 0, decay_steps: int = 0,
                   weight_decay: float = 0.0) -> keras.optimizers.Optimizer:
    """``"adam"`` (Keras defaults) or ``"sgd"`` with ``momentum`` (the paper's RBM training: none);
    ``loss_scale_factor``: see :func:`tfimpute.precision.loss_scale_factor`; the learning rate
    follows :func:`learning_rate_schedule`. ``weight_decay`` λ: Keras's decoupled decay,
    θ ← θ − η λ θ every step, on every variable but the biases."""
    schedule = learning_rate_schedule(learning_rate, warmup_steps, decay_steps)
    decay = weight_decay or None
    if check_optimizer_name(name) == "adam":
        optimizer = keras.optimizers.Adam(learning_rate=schedule, weight_decay=decay,
                                          loss_scale_factor=loss_scale_factor)
    else:
        optimizer = keras.optimizers.SGD(learning_rate=schedule, momentum=momentum, weight_decay=decay,
                                         loss_scale_factor=loss_scale_factor)
    if decay:
        optimizer.exclude_from_weight_decay(var_names=["bias"])
    return optimizer


class OptimizerSettings:
    """Mixin for an imputer trained by one optimizer built from its settings ``optimizer``,
    ``learning_rate`` and ``momentum`` (the RBMs, the VAE, RealNVP); list it before ``Imputer``.

    It adds the training options every such model shares (defaults: none, as in the papers): a
    learning-rate warm-up and cosine decay (:func:`learning_rate_schedule`) and weight decay
    (:func:`make_optimizer`).

    A model whose updates are gradients of a loss (``scales_loss``) gets float16's loss scale under
    ``mixed_float16`` and scales its loss with ``optimizer.scale_loss``; the RBMs' CD-1 updates are
    not gradients and are applied as they are.
    """

    scales_loss = True
    TRAINING_OPTIONS = ("lr_warmup_steps", "lr_decay_steps", "weight_decay")

    def __init__(self, *,
                 lr_warmup_steps: Annotated[int, Setting(
                     "Steps of linear learning-rate warm-up from 0 (0: none).")] = 0,
                 lr_decay_steps: Annotated[int, Setting(
                     "Steps of cosine learning-rate decay to 0 after the warm-up (0: none).")] = 0,
                 weight_decay: Annotated[float, Setting(
                     "Decoupled weight decay: every step, weights (not biases) -= lr * weight_decay * "
                     "weights (0: none).")] = 0.0,
                 **kwargs):
        for name, value in (("lr_warmup_steps", lr_warmup_steps), ("lr_decay_steps", lr_decay_steps),
                            ("weight_decay", weight_decay)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        super().__init__(**kwargs)
        self.lr_warmup_steps, self.lr_decay_steps, self.weight_decay = lr_warmup_steps, lr_decay_steps, weight_decay

    def get_config(self) -> dict:
        return {**super().get_config(), "lr_warmup_steps": self.lr_warmup_steps,
                "lr_decay_steps": self.lr_decay_steps, "weight_decay": self.weight_decay}

    @classmethod
    def upgraded_config(cls, config: dict) -> dict:
        """Configs written before these options existed trained without them (their defaults)."""
        defaults = settings_of(cls)
        return {**{name: defaults[name].default for name in cls.TRAINING_OPTIONS}, **super().upgraded_config(config)}

    def set_optimizer_settings(self, optimizer: str, learning_rate: float, momentum: float) -> None:
        """Stores (and checks) the settings :meth:`default_optimizer` builds from."""
        self.optimizer_name = check_optimizer_name(optimizer)
        self.learning_rate, self.momentum = learning_rate, momentum

    def default_optimizer(self) -> keras.optimizers.Optimizer:
        scale = precision.loss_scale_factor(self.dtype_policy.name) if self.scales_loss else None
        return make_optimizer(self.optimizer_name, self.learning_rate, self.momentum, scale,
                              self.lr_warmup_steps, self.lr_decay_steps, self.weight_decay)


def checked_data_shape(data_shape) -> tuple[int, ...]:
    """One example's shape as a tuple: (H, W, C) for images or (D,) for vectors."""
    shape = tuple(int(size) for size in data_shape)
    if len(shape) not in (1, 3) or min(shape) < 1:
        raise ValueError(f"data_shape must be [H, W, C] (images) or [D] (vectors) of positive sizes, "
                         f"got {list(shape)}")
    return shape


class Imputer(keras.Model):
    """Base class: see the module docstring for the contract.

    ``data_shape`` is one example's shape, taken from the training data (never a setting):
    (H, W, C) for images, (D,) for vectors. Models that need images set ``accepts_vectors = False``.
    """

    trainable_imputer = True
    # Whether the model works on vectors [N, D] (tables); image-only models refuse them in one line.
    accepts_vectors = True
    # Without --complete_training_data or a missingness flag, train on complete digits (DCGAN, CGAN).
    complete_training_data_by_default = False
    # Settings renamed since workdirs were first written: {old get_config key: new key}.
    renamed_settings: dict[str, str] = {}
    # Constructor arguments that settings_for_data derives from the training data (not flags).
    data_settings: tuple[str, ...] = ()
    # get_config() keys older versions wrote that are now derived from data_shape (dropped on reading).
    derived_settings: tuple[str, ...] = ()
    # Settings added since workdirs were first written: an older config trained with their defaults.
    added_settings: tuple[str, ...] = ()
    # Settings small enough to train and export in seconds: the contract test (tests/test_contract.py)
    # runs every registered model with them.
    tiny_settings: dict = {}
    # Settings that give the model's size, reported beside a benchmark's figures.
    size_settings: tuple[str, ...] = ()
    # get_config() keys that only affect imputation: a trained workdir may change them (workdir.claim).
    inference_settings: tuple[str, ...] = ()
    # The settings of the knob that trades distortion (RMSE) for perception (FID), swept by
    # ``tfimpute.evaluate --frontier`` (paper §5's open question); empty: the trained model is one point.
    frontier_points: tuple[FrontierPoint, ...] = ()
    # At most this many test examples in the training loop's per-epoch RMSE check (None: no limit),
    # for imputers whose imputation is an expensive search.
    epoch_eval_limit: int | None = None
    # At most this many examples per imputation call of `impute` (None: as asked), for imputers
    # whose memory grows fast with the batch (DCGAN's search holds restarts x examples latents).
    max_impute_batch: int | None = None

    def __init__(self, data_shape=MNIST_SHAPE, **kwargs):
        super().__init__(**kwargs)
        self.data_shape = checked_data_shape(data_shape)
        if len(self.data_shape) == 1 and not self.accepts_vectors:
            raise ValueError(f"{self.name} works on images [H, W, C] only, not on vectors "
                             f"of {self.data_shape[0]} values")

    @property
    def is_image_model(self) -> bool:
        return len(self.data_shape) == 3

    def get_config(self) -> dict:
        """The constructor arguments; subclasses add their settings to ``super().get_config()``."""
        return {"data_shape": list(self.data_shape), "name": self.name}

    @classmethod
    def upgraded_config(cls, config: dict) -> dict:
        """``config`` as written by any version in today's keys (renamed keys, derived ones dropped,
        added ones at their defaults, the MNIST shape of versions that knew no other)."""
        config = {cls.renamed_settings.get(key, key): value for key, value in config.items()
                  if key not in cls.derived_settings}
        config.setdefault("data_shape", list(MNIST_SHAPE))
        defaults = settings_of(cls)
        for name in cls.added_settings:
            config.setdefault(name, defaults[name].default)
        return config

    @classmethod
    def from_config(cls, config: dict):
        """Rebuilds the model from ``get_config()``, also as written by older versions."""
        return cls(**cls.upgraded_config(config))

    @classmethod
    def settings_for_data(cls, settings: dict, train_data: TrainingExamples) -> dict:
        """Settings that depend on the training data resolved before the model is built (default: none)."""
        return settings

    def default_optimizer(self) -> keras.optimizers.Optimizer | None:
        """The optimizer ``compile()`` uses when given none (default: none, an untrained imputer)."""
        return None

    def compile(self, optimizer: keras.optimizers.Optimizer | None = None, **kwargs) -> None:
        """Keras ``compile`` with the model's own optimizer (:meth:`default_optimizer`) unless one is given."""
        # No LossScaleOptimizer (Keras wraps one under mixed_float16 by default): its variables would
        # change the checkpoint's layout, and CD-1 is no loss; float16 scales statically (tfimpute.precision).
        kwargs.setdefault("auto_scale_loss", False)
        super().compile(optimizer=optimizer if optimizer is not None else self.default_optimizer(), **kwargs)

    def serving_signatures(self) -> dict[str, signatures.ServingSignature]:
        """The exported endpoints: ``serving_default`` imputes with the fixed seed (0, 0).

        Subclasses extend ``super().serving_signatures()``; an entry named
        ``serving_default`` replaces the generic one.
        """
        return {signatures.DEFAULT_SIGNATURE: signatures.impute_signature(
            self.impute_batch, "model.impute_batch with the fixed stateless seed (0, 0)", self.data_shape)}

    def optimizers(self) -> list[keras.optimizers.Optimizer]:
        """The optimizers ``compile`` set up (empty before it, and for an untrained imputer)."""
        return [self.optimizer] if getattr(self, "optimizer", None) is not None else []

    def build_optimizers(self) -> None:
        """Creates optimizer slots before a checkpoint is restored or a step is traced."""
        for optimizer in self.optimizers():
            optimizer.build(self.trainable_variables)

    @property
    def training_step_counter(self) -> tf.Variable:
        """Counts train_step calls; the x-axis of training summaries."""
        return self.optimizer.iterations

    def prepare(self, train_data: TrainingExamples) -> None:
        """Default: nothing to prepare."""

    def check_batch_size(self, batch_size: int) -> None:
        """Raises ValueError when the model cannot train with global batches of ``batch_size`` (default: it can)."""

    def distributed_train_step(self, strategy: tf.distribute.Strategy, batch) -> dict[str, tf.Tensor]:
        """``train_step`` on every replica's slice of ``batch``; logs summed over replicas.

        Models override it to put control flow around synchronisation points (MisGAN),
        which ``tf.distribute`` allows in cross-replica context only.
        """
        return sum_over_replicas(strategy, strategy.run(self.train_step, args=(batch,)))

    def impute_batch(self, images: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        raise NotImplementedError

    def impute(self, images, mask, *, seed: int = 0, batch_size: int = 1000) -> np.ndarray:
        """Validates ``images``/``mask`` and imputes them batch by batch (NumPy in, NumPy out)."""
        images, mask = check_images_and_mask(images, mask, self.data_shape)
        batch_size = min(batch_size, self.max_impute_batch or batch_size)
        impute_fn = self._compiled_impute()
        outputs = []
        for start in range(0, len(images), batch_size):
            batch_seed = tf.constant([seed, start], dtype=tf.int32)
            outputs.append(impute_fn(images[start:start + batch_size],
                                     mask[start:start + batch_size], batch_seed).numpy())
        if not outputs:
            return np.zeros_like(images)
        return np.concatenate(outputs)

    def _compiled_impute(self):
        if getattr(self, "_impute_fn", None) is None:
            spec = tf.TensorSpec([None, *self.data_shape], tf.float32)
            self._impute_fn = tf.function(
                self.impute_batch,
                input_signature=[spec, spec, tf.TensorSpec([2], tf.int32)])
        return self._impute_fn
