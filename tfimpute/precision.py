"""Mixed precision for every model, through Keras's dtype policies.

``--dtype_policy``: ``float32`` (the default), ``mixed_bfloat16`` (CPUs with bf16 matrix units,
TPUs, Ampere and later GPUs) or ``mixed_float16`` (GPUs). Under a mixed policy Keras layers
keep their variables in float32 and compute in the low precision; a model is built inside
:func:`policy_scope` so that it and all its networks take the policy. What the numerics need
stays float32, in the models' own code: parameters, CD-1's summed updates, losses, the gradient
penalty, flow log-determinants and every sigmoid or softmax output (:func:`to_float32` on a
network's output before them). Checkpoints hold float32 variables under every policy, so a run
resumes under another one; exports take and return float32.

Loss scaling for float16 is static (:data:`FLOAT16_LOSS_SCALE` via the Keras optimizers'
``loss_scale_factor``, see :func:`loss_scale_factor`): unlike ``LossScaleOptimizer`` it adds no
variables, so the checkpoint's layout is the same under every policy. bfloat16 has float32's
exponent range and needs none.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import keras
import tensorflow as tf

FLOAT32 = "float32"
DTYPE_POLICIES = (FLOAT32, "mixed_bfloat16", "mixed_float16")
FLOAT16_LOSS_SCALE = 1024.0  # keeps float16 gradients of small losses above its smallest normal number


def check_policy(name: str) -> str:
    if name not in DTYPE_POLICIES:
        raise ValueError(f"dtype policy must be one of {', '.join(DTYPE_POLICIES)}, got {name!r}")
    return name


@contextlib.contextmanager
def policy_scope(name: str) -> Iterator[None]:
    """Keras's global dtype policy is ``name`` inside the block (models built there take it), and
    what it was before afterwards."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(check_policy(name))
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def loss_scale_factor(policy_name: str) -> float | None:
    """The static loss scale of a model trained by gradients of a loss under ``policy_name``: pass it
    as an optimizer's ``loss_scale_factor`` and scale the loss with ``optimizer.scale_loss``."""
    return FLOAT16_LOSS_SCALE if policy_name == "mixed_float16" else None


def to_float32(tensor: tf.Tensor) -> tf.Tensor:
    """A network's output in float32, before a sigmoid, a softmax, a log-likelihood or a loss."""
    return tf.cast(tensor, tf.float32)
