"""The ``tf.distribute`` strategy of ``--strategy``, and what a training run needs to know about it.

* ``default``: one device (TensorFlow's default strategy).
* ``mirrored``: ``MirroredStrategy`` over this machine's GPUs, or over the logical
  CPUs that ``--cpu_replicas`` makes (a way to try it on a machine without GPUs).
* ``multi_worker``: ``MultiWorkerMirroredStrategy``; the cluster comes from ``TF_CONFIG``.
* ``tpu``: ``TPUStrategy`` on the TPU a ``TPUClusterResolver`` finds.

Every mistake a user can make here raises :class:`tfimpute.errors.InvalidInputError`
with a one-line message.
"""

from __future__ import annotations

import json
import os
from typing import Any

import tensorflow as tf

from tfimpute.errors import InvalidInputError

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")


def split_cpu(replicas: int) -> None:
    """Splits the host CPU into ``replicas`` logical devices.

    TensorFlow fixes its devices when it first uses them, so this must run before
    anything else touches a device.
    """
    cpu = tf.config.list_physical_devices("CPU")[0]
    wanted = [tf.config.LogicalDeviceConfiguration() for _ in range(replicas)]
    try:
        tf.config.set_logical_device_configuration(cpu, wanted)
    except RuntimeError:
        raise InvalidInputError(
            f"--cpu_replicas={replicas}: TensorFlow has already initialised its devices "
            f"({len(tf.config.list_logical_devices('CPU'))} logical CPUs); split the CPU first") from None


def _tpu_strategy() -> tf.distribute.Strategy:
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as exc:
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InvalidInputError(f"--strategy=tpu: no TPU found ({first_line})") from None
    return tf.distribute.TPUStrategy(resolver)


def checked_tf_config(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """``TF_CONFIG`` (multi-worker training) parsed and checked: JSON with a ``cluster`` of task
    lists and a ``task`` whose type and index name one of them. One-line errors otherwise."""
    text = (os.environ if environ is None else environ).get("TF_CONFIG")
    if not text:
        raise InvalidInputError("--strategy=multi_worker needs TF_CONFIG (the cluster and this worker's task); "
                                "see README, 'Training on several devices'")
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"TF_CONFIG is not JSON ({exc.msg} at character {exc.pos})") from None
    cluster, task = (config.get("cluster"), config.get("task")) if isinstance(config, dict) else (None, None)
    if not isinstance(cluster, dict) or not cluster or not all(
            isinstance(tasks, list) and tasks and all(isinstance(t, str) for t in tasks) for tasks in cluster.values()):
        raise InvalidInputError('TF_CONFIG: "cluster" must map task types to lists of "host:port" addresses, '
                                f"got {cluster!r}")
    if not isinstance(task, dict) or "type" not in task or "index" not in task:
        raise InvalidInputError(f'TF_CONFIG: "task" must be {{"type": ..., "index": ...}}, got {task!r}')
    task_type, index = task["type"], task["index"]
    if task_type not in cluster:
        raise InvalidInputError(f"TF_CONFIG: task type {task_type!r} is not in the cluster "
                                f"({', '.join(sorted(cluster))})")
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(cluster[task_type]):
        raise InvalidInputError(f"TF_CONFIG: task index {index!r} is outside the cluster's "
                                f"{len(cluster[task_type])} {task_type} task(s)")
    return config


def make_strategy(name: str, cpu_replicas: int = 0, log=print) -> tf.distribute.Strategy:
    """The strategy called ``name`` (one of :data:`STRATEGIES`); ``log`` says what a user may not expect.

    ``cpu_replicas`` > 0 (``mirrored`` only) first splits the CPU into that many logical
    devices (:func:`split_cpu`) and mirrors over them.
    """
    if name not in STRATEGIES:
        raise InvalidInputError(f"unknown --strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    if cpu_replicas < 0:
        raise InvalidInputError(f"--cpu_replicas must be >= 0, got {cpu_replicas}")
    if cpu_replicas and name != "mirrored":
        raise InvalidInputError(f"--cpu_replicas needs --strategy=mirrored, got --strategy={name}")
    if cpu_replicas:
        split_cpu(cpu_replicas)
        return tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")])
    if name == "mirrored":
        strategy = tf.distribute.MirroredStrategy()
        if not tf.config.list_physical_devices("GPU"):
            log(f"--strategy=mirrored: no GPU here, so it runs on {strategy.num_replicas_in_sync} CPU "
                "replica(s); --cpu_replicas=N mirrors over N logical CPUs")
        return strategy
    if name == "multi_worker":
        checked_tf_config()
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        return _tpu_strategy()
    return tf.distribute.get_strategy()


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    """True for a MultiWorkerMirroredStrategy whose cluster has more than one worker."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return False
    jobs = strategy.cluster_resolver.cluster_spec().as_dict()
    return sum(len(jobs.get(job, ())) for job in ("chief", "worker")) > 1


def worker_workdir(strategy: tf.distribute.Strategy, workdir: str) -> str:
    """Where this worker writes: ``workdir`` for the chief (or a single worker), and
    ``workdir/workers/TYPE_ID`` for the others, whose copies must not overwrite the chief's."""
    if not is_multi_worker(strategy):
        return workdir
    resolver = strategy.cluster_resolver
    task_type, task_id = resolver.task_type, resolver.task_id
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    if task_type == "chief" or (task_type == "worker" and task_id == 0 and not has_chief):
        return workdir
    return os.path.join(workdir, "workers", f"{task_type}_{task_id}")
