"""Per-replica shares of global-batch quantities, so that N replicas compute what one device would.

Under ``tf.distribute`` each replica's ``train_step`` sees a slice of the global batch
(:func:`tfimpute.training.distributed_epoch` gives replica r the rows after those of
replicas 0..r-1, and a batch that N replicas do not divide splits unevenly).
Everything that depends on the whole batch is written here once:

* :func:`replica_rows`: where this replica's rows sit in the global batch;
  :func:`global_rows_of`: every replica's rows gathered back in that order;
* :func:`replica_mean`: a replica's share of a global-batch mean (exact for uneven
  splits, since the count is all-reduced), so that the SUM all-reduce that Keras applies
  to gradients yields the single-device gradient of the mean, and so that training logs
  summed over replicas are the single-device logs;
* :class:`StepDraws`: the random draws of a training step, drawn for the GLOBAL batch
  from a stateless seed keyed by (model seed, step, stream) and sliced to this
  replica's rows: every example gets the same noise on any number of replicas, and a
  resumed run draws what an uninterrupted one would.

Outside a replica context (cross-replica code) or with one replica, all of them act as
on a single device.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf


def _replica_context() -> tf.distribute.ReplicaContext | None:
    """The current replica context when it has several replicas to talk to, else None."""
    context = tf.distribute.get_replica_context()
    return context if context is not None and context.num_replicas_in_sync > 1 else None


def global_sum(value: tf.Tensor) -> tf.Tensor:
    """``value`` summed over the replicas (all-reduce); ``value`` itself on a single device."""
    context = _replica_context()
    return value if context is None else context.all_reduce(tf.distribute.ReduceOp.SUM, value)


def replica_rows(local_size: tf.Tensor | int) -> tuple[tf.Tensor, tf.Tensor]:
    """(offset of this replica's first row, global batch size), int32 scalars.

    The offset is the sum of the local batch sizes of the replicas before this one,
    gathered from all of them, so uneven splits are handled.
    """
    local_size = tf.cast(local_size, tf.int32)
    context = _replica_context()
    if context is None:
        return tf.constant(0, tf.int32), local_size
    sizes = context.all_gather(tf.reshape(local_size, [1]), axis=0)
    replica = context.replica_id_in_sync_group
    return tf.reduce_sum(sizes[:replica]), tf.reduce_sum(sizes)


def global_rows_of(values: tf.Tensor) -> tf.Tensor:
    """The rows of every replica's ``values`` gathered in global-batch order (all-gather); ``values``
    itself on a single device. Every replica gets the same tensor (e.g. to assign state kept per row)."""
    context = _replica_context()
    return values if context is None else context.all_gather(values, axis=0)


def replica_mean(values: tf.Tensor) -> tf.Tensor:
    """This replica's share of the mean over the GLOBAL batch: Σ local values / global count.

    ``values`` holds one entry per local example (leading axis); summed over replicas the
    shares give the single-device mean.
    """
    count = tf.cast(tf.shape(values)[0], values.dtype)
    return tf.reduce_sum(values) / tf.stop_gradient(global_sum(count))


class StepDraws:
    """The random draws of one training step, identical to a single device's for every example.

    Each call draws for the whole global batch from its own stateless seed (the i-th call
    of a step uses fold_in(fold_in((seed, step), stream), i)) and keeps this replica's rows.

    Args:
      seed: the model's seed.
      step: the training step (an optimizer's ``iterations``), so draws are resumable.
      local_size: rows of this replica's batch.
      stream: separates independent uses within one step (e.g. MisGAN's critic and
        generator updates).
    """

    def __init__(self, seed: int, step: tf.Tensor | int, local_size: tf.Tensor | int, stream: int = 0):
        key = tf.stack([tf.constant(seed, tf.int64), tf.cast(step, tf.int64)])
        self._key = tf.random.experimental.stateless_fold_in(key, stream)
        self._calls = 0
        self.local_size = tf.cast(local_size, tf.int32)
        self.offset, self.global_size = replica_rows(self.local_size)

    def _seed(self) -> tf.Tensor:
        seed = tf.random.experimental.stateless_fold_in(self._key, self._calls)
        self._calls += 1
        return seed

    def _rows(self, draw: tf.Tensor) -> tf.Tensor:
        return draw[self.offset:self.offset + self.local_size]

    def _shape(self, shape: Sequence[int]) -> tf.Tensor:
        return tf.concat([tf.reshape(self.global_size, [1]), tf.constant(list(shape), tf.int32)], axis=0)

    def uniform(self, shape: Sequence[int], minval: float = 0.0, maxval: float = 1.0) -> tf.Tensor:
        """U(minval, maxval) draws, [local batch, *shape]."""
        return self._rows(tf.random.stateless_uniform(self._shape(shape), self._seed(), minval, maxval))

    def normal(self, shape: Sequence[int]) -> tf.Tensor:
        """N(0, 1) draws, [local batch, *shape]."""
        return self._rows(tf.random.stateless_normal(self._shape(shape), self._seed()))
