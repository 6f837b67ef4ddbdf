"""The ``tf.distribute`` strategy of ``--strategy``, and what a training run needs to know about it.

* ``default``: one device (TensorFlow's default strategy).
* ``mirrored``: ``MirroredStrategy`` over this machine's GPUs, or over the logical
  CPUs that ``--cpu_replicas`` makes (a way to try it on a machine without GPUs).
* ``multi_worker``: ``MultiWorkerMirroredStrategy``; the cluster comes from ``TF_CONFIG``. The
  worker says which peers it waits for and gives up after ``cluster_timeout`` seconds naming the
  tasks that never came up (:func:`start_multi_worker`); Ctrl-C and SIGTERM to its process group
  stop it while it waits.
  A worker that loses a peer while training names it (:func:`lost_peers`); SIGTERM makes every
  worker save at one step (:func:`tfimpute.training.preemption_handler`).
* ``tpu``: ``TPUStrategy`` on the TPU a ``TPUClusterResolver`` finds.

Every mistake a user can make here raises :class:`tfimpute.errors.InvalidInputError`
with a one-line message; a cluster that does not form raises :class:`tfimpute.errors.ClusterError`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from typing import Any

import tensorflow as tf

from tfimpute.errors import ClusterError, InvalidInputError

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


def task_addresses(config: dict[str, Any]) -> dict[str, str]:
    """Every task of a checked ``TF_CONFIG``'s cluster, named "TYPE INDEX", and its address."""
    return {f"{task_type} {index}": address for task_type, addresses in config["cluster"].items()
            for index, address in enumerate(addresses)}


def start_multi_worker(config: dict[str, Any], timeout: float, log=print) -> tf.distribute.Strategy:
    """``MultiWorkerMirroredStrategy`` for ``config`` (checked ``TF_CONFIG``), waiting at most
    ``timeout`` seconds for the other workers.

    TensorFlow's constructor blocks until every worker has joined, in native code that neither a
    timeout nor Ctrl-C reaches, and TensorFlow takes SIGTERM for its preemption notices. So a
    watcher process (:mod:`tfimpute.cluster_watch`, same process group) prints one line and ends
    this one if the cluster is not up within ``timeout`` (naming the tasks that never came up), or on
    Ctrl-C or SIGTERM to the process group.
    """
    me = f"{config['task']['type']} {config['task']['index']}"
    peers = {name: address for name, address in task_addresses(config).items() if name != me}
    log(f"{me}: waiting up to {timeout:g} s (--cluster_timeout) for "
        + ", ".join(f"{name} ({address})" for name, address in peers.items())
        + "; Ctrl-C or SIGTERM to the process group stop it")
    sys.stdout.flush()
    watcher = subprocess.Popen(
        [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "cluster_watch.py"),
         str(os.getpid()), repr(float(timeout)), me, *(f"{name}={address}" for name, address in peers.items())],
        stdin=subprocess.PIPE)
    try:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    except tf.errors.OpError as exc:
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ClusterError(f"{me}: the cluster did not form ({type(exc).__name__}: {first_line})") from None
    finally:
        watcher.stdin.close()  # the watcher ends quietly
        watcher.wait()
    log(f"{me}: the cluster is up ({len(peers) + 1} workers)")
    return strategy


# What a collective raises when a peer is gone (killed, unreachable, or itself failed and aborted the
# cluster); other errors are the program's and keep their traceback.
PEER_FAILURES = (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.DeadlineExceededError,
                 tf.errors.CancelledError)
LOST_TASK = re.compile(r"/job:(\w+)/replica:\d+/task:(\d+)")


def lost_peers(error: Exception, strategy: tf.distribute.Strategy) -> list[str]:
    """The tasks ("TYPE INDEX") other than this one that a collective's error names."""
    resolver = strategy.cluster_resolver
    me = (resolver.task_type, str(resolver.task_id))
    named = dict.fromkeys(f"{kind} {index}" for kind, index in LOST_TASK.findall(str(error))
                          if (kind, index) != me)
    return list(named)


def make_strategy(name: str, cpu_replicas: int = 0, log=print,
                  cluster_timeout: float = 300.0) -> tf.distribute.Strategy:
    """The strategy called ``name`` (one of :data:`STRATEGIES`); ``log`` says what a user may not expect.

    ``cpu_replicas`` > 0 (``mirrored`` only) first splits the CPU into that many logical
    devices (:func:`split_cpu`) and mirrors over them. ``cluster_timeout``: seconds a
    ``multi_worker`` worker waits for its peers (:func:`start_multi_worker`).
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
        if cluster_timeout <= 0:
            raise InvalidInputError(f"--cluster_timeout must be > 0 seconds, got {cluster_timeout:g}")
        return start_multi_worker(checked_tf_config(), cluster_timeout, log)
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
