"""Training under tf.distribute: N replicas sharing a global batch do what one device does.

MirroredStrategy runs over the two logical CPUs that conftest.py splits the host CPU into.
Tolerance of the equality checks: float32 round-off of sums taken in a different order
(per-replica partial sums, then the all-reduce), rtol = 1e-4, atol = 1e-6.
"""

import functools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from conftest import CPU_REPLICAS
from test_cli import run
from zoo_support import tiny_model

from tfimpute import distribute, masks, training
from tfimpute.errors import InvalidInputError
from tfimpute.models.replicas import StepDraws, replica_mean
from tfimpute.training import ArrayTestSplit, TrainingOptions, run_training

RTOL, ATOL = 1e-4, 1e-6


@functools.cache
def strategy_named(name):
    if name == "default":
        return tf.distribute.get_strategy()
    strategy = distribute.make_strategy(name, cpu_replicas=CPU_REPLICAS)  # conftest already split the CPU
    assert strategy.num_replicas_in_sync == CPU_REPLICAS
    return strategy


@pytest.fixture
def mirrored():
    return strategy_named("mirrored")


STEPS = 2  # two: optimizer state (momentum, Adam moments) applied once more; MisGAN's generator step


def digits(n, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.random((n, 28, 28, 1)).astype(np.float32)
    mask = (rng.random((n, 28, 28, 1)) > 0.3).astype(np.float32)
    return masks.make_incomplete(images, mask, np.arange(n) % 10)


@functools.cache
def trained(strategy_name, name, batch_size=7, **overrides):
    """A fresh model (its tiny settings and ``overrides``) after STEPS steps on ``digits(batch_size)``
    under a strategy, and its last logs (cached: the checkpoint tests reuse the equality tests' models)."""
    return train_steps(strategy_named(strategy_name), name, digits(batch_size), STEPS, **overrides)


def train_steps(strategy, name, data, steps, **overrides):
    """``steps`` steps of a fresh model on the one global batch ``data``; returns it and the last logs."""
    with strategy.scope():
        model = tiny_model(name, **overrides)
        model.build_optimizers()
        model.prepare(data)
    step = tf.function(lambda b: model.distributed_train_step(strategy, b))
    for _ in range(steps):
        for distributed in training.distributed_epoch(strategy, data, len(data), seed=0, epoch=0):
            logs = step(distributed)
    return model, {key: float(value) for key, value in logs.items()}


def assert_same_weights(a, b, exact=False):
    for x, y in zip(a.get_weights(), b.get_weights(), strict=True):
        if exact:
            np.testing.assert_array_equal(x, y)
        else:
            np.testing.assert_allclose(x, y, rtol=RTOL, atol=ATOL)


def test_replicas_draw_and_average_what_one_device_does(mirrored):
    values = tf.range(7, dtype=tf.float32)

    def shares(local_values):
        draws = StepDraws(3, 5, tf.shape(local_values)[0], stream=1)
        return draws.uniform([2]), draws.normal([]), replica_mean(local_values)

    local = mirrored.experimental_distribute_values_from_function(
        lambda context: [values[:4], values[4:]][context.replica_id_in_sync_group])
    uniform, normal, mean = (mirrored.experimental_local_results(x)
                             for x in tf.function(lambda v: mirrored.run(shares, args=(v,)))(local))
    single_uniform, single_normal, single_mean = shares(values)
    np.testing.assert_array_equal(np.concatenate(uniform), single_uniform)
    np.testing.assert_array_equal(np.concatenate(normal), single_normal)
    assert sum(float(m) for m in mean) == pytest.approx(float(single_mean)) == 3.0


def check_mirrored_step_equals_single_device_step(mirrored, name, **overrides):
    """Run by the contract test (tests/test_contract.py) for every registered trainable model."""
    single, single_logs = trained("default", name, **overrides)  # a global batch of 7: 4 + 3 rows per replica
    replicated, replicated_logs = trained("mirrored", name, **overrides)
    assert replicated_logs.keys() == single_logs.keys()
    for key, value in single_logs.items():
        assert replicated_logs[key] == pytest.approx(value, rel=RTOL, abs=ATOL), key
    assert_same_weights(single, replicated)
    assert any(not np.array_equal(w, v.numpy()) for w, v in zip(  # training moved the model
        tiny_model(name, **overrides).get_weights(), replicated.weights))
    for variable in replicated.weights:  # the replicas' copies agree exactly
        copies = [c.numpy() for c in mirrored.experimental_local_results(variable.value)]
        assert len(copies) == CPU_REPLICAS and all(np.array_equal(copies[0], c) for c in copies)


def test_a_low_rank_rbm_mirrored_step_equals_the_single_device_step(mirrored):
    """W = AB under MirroredStrategy: both factor updates summed over replicas (the contract test runs
    the RBMs full-rank)."""
    check_mirrored_step_equals_single_device_step(mirrored, "rbm", rank=4)


def test_pcd_chains_carry_over_on_replicas_as_on_one_device(mirrored):
    """PCD: every replica continues its own rows' chains, and every copy of the chains gets all rows."""
    check_mirrored_step_equals_single_device_step(mirrored, "lmrbm", persistent_chains=9)


@pytest.mark.parametrize("name", ["lmrbm", "misgan"])
@pytest.mark.parametrize("writer,reader", [("mirrored", "default"), ("default", "mirrored")])
def test_checkpoints_restore_across_strategies(name, writer, reader, tmp_path):
    written, _ = trained(writer, name)
    path = tf.train.Checkpoint(model=written).save(str(tmp_path / "ckpt"))
    with strategy_named(reader).scope():
        restored = tiny_model(name)
        restored.build_optimizers()
    tf.train.Checkpoint(model=restored).restore(path).assert_consumed()
    assert_same_weights(written, restored, exact=True)
    assert restored.training_step_counter.numpy() == written.training_step_counter.numpy() > 0


def test_training_loop_resumes_a_mirrored_run_on_one_device(mirrored, tmp_path):
    data, test = digits(19), digits(4, seed=1)  # batches of 7, 7, 5: uneven splits
    options = TrainingOptions(epochs=2, batch_size=7, eval_size=4, grid_size=2)

    def fit(strategy, workdir, epochs):
        with strategy.scope():
            model = tiny_model("lmrbm")
        run_training(model, data, ArrayTestSplit(test.observed, test.mask), str(workdir),
                     TrainingOptions(**{**options.__dict__, "epochs": epochs}), {}, strategy=strategy)
        return model

    straight = fit(tf.distribute.get_strategy(), tmp_path / "straight", 2)
    fit(mirrored, tmp_path / "switched", 1)
    resumed = fit(tf.distribute.get_strategy(), tmp_path / "switched", 2)
    assert_same_weights(straight, resumed)


def test_last_batch_smaller_than_the_replica_count_is_left_out(mirrored):
    data = digits(2 * 7 + CPU_REPLICAS - 1)
    batches = list(training.distributed_epoch(mirrored, data, 7, seed=0, epoch=0))
    assert len(batches) == training.steps_per_epoch(len(data), 7, CPU_REPLICAS) == 2
    assert [len(part) for part in mirrored.experimental_local_results(batches[0][0])] == [4, 3]
    with pytest.raises(InvalidInputError, match="at least the number of replicas"):
        training.distributed_epoch(mirrored, data, CPU_REPLICAS - 1, seed=0, epoch=0)


def test_models_built_outside_the_strategy_scope_are_refused(mirrored, tmp_path):
    data = digits(7)
    with pytest.raises(InvalidInputError, match="strategy.scope"):
        run_training(tiny_model("lmrbm"), data, ArrayTestSplit(data.observed, data.mask), str(tmp_path),
                     TrainingOptions(epochs=1, batch_size=7), {}, strategy=mirrored)


def test_splitting_the_cpu_after_tensorflow_started_is_refused():
    tf.config.list_logical_devices("CPU")  # TensorFlow has started, whatever ran before this test
    with pytest.raises(InvalidInputError, match="already initialised"):
        distribute.split_cpu(CPU_REPLICAS + 1)


def test_train_cli_trains_mirrored_on_logical_cpus(mnist_dir, tmp_path):
    result = run("tfimpute.train", "--model=lmrbm", "--strategy=mirrored", f"--cpu_replicas={CPU_REPLICAS}",
                 f"--data_dir={mnist_dir}", f"--workdir={tmp_path}", "--epochs=1", "--train_size=63",
                 "--batch_size=16", "--test_size=16", "--eval_size=16", "--hidden_units=16")
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout.strip().splitlines()[-1])
    assert metrics["epochs"] == 1 and metrics["replicas"] == CPU_REPLICAS and 0 < metrics["test_rmse"] < 1


@pytest.mark.parametrize("name,cpu_replicas,message", [
    ("gpu9000", 0, "unknown --strategy 'gpu9000'; choose one of default, mirrored, multi_worker, tpu"),
    ("default", CPU_REPLICAS, "--cpu_replicas needs --strategy=mirrored, got --strategy=default"),
    ("mirrored", -1, "--cpu_replicas must be >= 0, got -1"),
    ("tpu", 0, "--strategy=tpu: no TPU found"),
])
def test_bad_strategy_settings_are_refused(name, cpu_replicas, message):
    with pytest.raises(InvalidInputError, match="^" + re.escape(message)):
        distribute.make_strategy(name, cpu_replicas)


def test_train_cli_bad_strategy_gives_a_one_line_error(tmp_path):
    result = run("tfimpute.train", f"--workdir={tmp_path}", "--strategy=tpu")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: --strategy=tpu: no TPU found"), result.stderr
    assert "Traceback" not in result.stderr


def test_workers_agree_only_when_every_replica_holds_the_same_position():
    def totals(positions):
        positions = np.asarray(positions, np.float64)
        return np.concatenate([positions.sum(0), np.square(positions).sum(0), [len(positions)]])

    assert training.positions_agree(totals([[3, 17], [3, 17], [3, 17]]))
    assert not training.positions_agree(totals([[3, 17], [3, 18]]))
    assert not training.positions_agree(totals([[1, 0], [3, 0], [2, 0]]))  # same mean, not the same


@pytest.mark.parametrize("tf_config,message", [
    (None, "--strategy=multi_worker needs TF_CONFIG"),
    ("{cluster: 1", "TF_CONFIG is not JSON (Expecting property name enclosed in double quotes at character 1)"),
    ('{"cluster": {"worker": []}, "task": {"type": "worker", "index": 0}}', 'TF_CONFIG: "cluster" must map'),
    ('{"cluster": {"worker": ["localhost:1"]}, "task": {"type": "chief", "index": 0}}',
     "TF_CONFIG: task type 'chief' is not in the cluster (worker)"),
    ('{"cluster": {"worker": ["localhost:1", "localhost:2"]}, "task": {"type": "worker", "index": 2}}',
     "TF_CONFIG: task index 2 is outside the cluster's 2 worker task(s)"),
    ('{"cluster": {"worker": ["localhost:1"]}}', 'TF_CONFIG: "task" must be'),
])
def test_bad_tf_config_is_refused_in_one_line(tf_config, message):
    environ = {} if tf_config is None else {"TF_CONFIG": tf_config}
    with pytest.raises(InvalidInputError, match="^" + re.escape(message)):
        distribute.checked_tf_config(environ)
    good = '{"cluster": {"worker": ["localhost:1", "localhost:2"]}, "task": {"type": "worker", "index": 1}}'
    assert distribute.checked_tf_config({"TF_CONFIG": good})["task"]["index"] == 1


def test_mirrored_without_gpus_says_it_runs_on_one_replica():
    lines = []
    strategy = distribute.make_strategy("mirrored", log=lines.append)
    if not tf.config.list_physical_devices("GPU"):
        assert lines == [f"--strategy=mirrored: no GPU here, so it runs on {strategy.num_replicas_in_sync} CPU "
                         "replica(s); --cpu_replicas=N mirrors over N logical CPUs"]


def test_a_batch_smaller_than_the_replicas_is_refused(mirrored, tmp_path):
    from tfimpute import experiment

    with pytest.raises(InvalidInputError, match=f"--batch_size=1 is smaller than the {CPU_REPLICAS} replicas"):
        experiment.train("mean", np.zeros((4, 2), np.float32), {}, {}, TrainingOptions(epochs=1, batch_size=1),
                         str(tmp_path), mirrored)


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _training_command(workdir, strategy: str, mnist_dir, cluster_timeout: float = 60) -> list[str]:
    """A tiny LM-RBM run: 32 steps of 8 digits per epoch, two epochs."""
    return [sys.executable, "-m", "tfimpute.train", "--model=lmrbm", "--hidden_units=8", "--epochs=2",
            "--train_size=256", "--test_size=32", "--batch_size=8", f"--data_dir={mnist_dir}",
            f"--strategy={strategy}", f"--cluster_timeout={cluster_timeout}", f"--workdir={workdir}"]


def _worker_environment(ports: list[int], index: int) -> dict[str, str]:
    """The environment of worker ``index`` of a localhost cluster on ``ports``."""
    tf_config = {"cluster": {"worker": [f"localhost:{port}" for port in ports]}, "task": {"type": "worker", "index": index}}
    return {**os.environ, "TF_CONFIG": json.dumps(tf_config), "PYTHONUNBUFFERED": "1"}


def _lone_worker(tmp_path, mnist_dir, timeout: float) -> tuple[subprocess.Popen, int]:
    """Worker 0 of a two-worker cluster whose worker 1 never starts."""
    ports = _free_ports(2)
    command = _training_command(tmp_path / "run", "multi_worker", mnist_dir, cluster_timeout=timeout)
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env=_worker_environment(ports, 0)), ports[1]


def test_a_lone_worker_says_whom_it_waits_for_gives_up_in_one_line_and_stops_on_sigterm(mnist_dir, tmp_path):
    waiting, peer = _lone_worker(tmp_path / "a", mnist_dir, timeout=2)
    stopped, _ = _lone_worker(tmp_path / "b", mnist_dir, timeout=600)
    out, err = waiting.communicate(timeout=120)
    assert f"worker 0: waiting up to 2 s (--cluster_timeout) for worker 1 (localhost:{peer}); Ctrl-C or SIGTERM to the process group stop it" in out
    error_lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert error_lines == [f"error: worker 0: gave up after --cluster_timeout=2 s; never came up: "
                           f"worker 1 (localhost:{peer})"], err
    assert waiting.returncode == -signal.SIGKILL and "Traceback" not in err

    # SIGTERM once it waits (it said so), not while TensorFlow imports: on a loaded machine the
    # import alone has taken over a minute.
    deadline, waits = time.monotonic() + 300, False
    while not waits and time.monotonic() < deadline:
        line = stopped.stdout.readline()
        waits = "waiting up to" in line
        if not line and stopped.poll() is not None:
            break
    assert waits, f"worker 0 never said it was waiting: {stopped.communicate(timeout=30)}"
    os.killpg(stopped.pid, signal.SIGTERM)  # what a scheduler stopping the job sends
    _, err = stopped.communicate(timeout=30)
    assert stopped.returncode in (-signal.SIGKILL, -signal.SIGTERM)
    assert "error: worker 0: stopped by SIGTERM while waiting for the cluster" in err and "Traceback" not in err


class _Pair:
    """Workers 0 and 1 of a localhost cluster, started with the same command each time; their
    output goes to files that the test polls (bounded in time)."""

    def __init__(self, workdir, mnist_dir, logs):
        self.command = _training_command(workdir, "multi_worker", mnist_dir)
        self.ports, self.logs, self.rounds = _free_ports(2), logs, 0

    def start(self) -> None:
        self.rounds += 1
        self.workers, self.outputs = [], []
        for index in range(2):
            output = self.logs / f"round{self.rounds}_worker{index}.txt"
            self.outputs.append(output)
            with open(output, "w") as sink:
                self.workers.append(subprocess.Popen(
                    self.command, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True,
                    env=_worker_environment(self.ports, index)))

    def wait_for(self, index: int, text: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.outputs[index].read_text():
            assert self.workers[index].poll() is None and time.monotonic() < deadline, self.outputs[index].read_text()
            time.sleep(0.05)

    def finish(self, timeout: float = 90) -> list[tuple[int, str]]:
        """Each worker's exit status and output."""
        try:
            for worker in self.workers:
                worker.wait(timeout)
        finally:
            for worker in self.workers:
                if worker.poll() is None:
                    os.killpg(worker.pid, signal.SIGKILL)
        return [(worker.returncode, output.read_text()) for worker, output in zip(self.workers, self.outputs)]


def _errors(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith(("error:", "preempted:"))]


def _checkpointed_weights(workdir) -> dict[str, np.ndarray]:
    reader = tf.train.load_checkpoint(str(workdir / "checkpoints"))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if name.startswith("model/")}


def test_two_workers_survive_sigterm_and_a_killed_peer_and_end_with_the_single_device_weights(mnist_dir, tmp_path):
    """One interrupted two-worker run against one uninterrupted single-device run of the same command:
    SIGTERM to worker 1 in epoch 1 makes both save at one step and stop (TensorFlow's
    PreemptionCheckpointHandler); the restarted pair resumes there, worker 1 is killed in epoch 2 and
    worker 0 ends in one line; the pair restarted again ends with the single device's weights."""
    single = subprocess.Popen(_training_command(tmp_path / "single", "default", mnist_dir),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    pair = _Pair(tmp_path / "pair", mnist_dir, tmp_path)

    pair.start()
    pair.wait_for(1, "Epoch 1/2")
    pair.workers[1].send_signal(signal.SIGTERM)  # what a scheduler sends before preempting a job
    (status0, output0), (status1, output1) = pair.finish()
    step = re.fullmatch(r"preempted: SIGTERM reached a worker, and every worker saved a checkpoint after step "
                        r"(\d+) of epoch 1 \(.*ckpt-1\); start every worker again with the same command to resume",
                        _errors(output0)[0])
    assert step and 0 < int(step[1]) < 32, output0
    assert _errors(output0) == [step[0]] and status0 == status1 == 143, (output0, output1)
    worker_1_dir = tmp_path / "pair" / "workers" / "worker_1"
    assert _errors(output1) == [step[0].replace(str(tmp_path / "pair"), str(worker_1_dir))], output1

    pair.start()
    pair.wait_for(0, f"Resuming from {tmp_path / 'pair' / 'checkpoints' / 'ckpt-1'}: epoch 1, step {step[1]}")
    pair.wait_for(1, "Epoch 2/2")
    os.killpg(pair.workers[1].pid, signal.SIGKILL)
    (status0, output0), _ = pair.finish()
    last = tmp_path / "pair" / "checkpoints" / "ckpt-2"
    assert _errors(output0) == [f"error: lost worker 1 in epoch 2 (UnavailableError); last checkpoint: {last}; "
                                "start every worker again with the same command to resume"] and status0 == 2, output0
    assert "Traceback" not in output0

    pair.start()
    (status0, output0), (status1, _) = pair.finish()
    assert status0 == status1 == 0 and "Resuming from" in output0 and "epoch 2, step 0" in output0, output0
    assert single.wait(60) == 0, single.stderr.read()
    interrupted, uninterrupted = _checkpointed_weights(tmp_path / "pair"), _checkpointed_weights(tmp_path / "single")
    assert interrupted.keys() == uninterrupted.keys()
    for name, value in uninterrupted.items():
        np.testing.assert_allclose(interrupted[name], value, rtol=RTOL, atol=ATOL, err_msg=name)
    metrics = [json.loads((tmp_path / run / "metrics.json").read_text()) for run in ("pair", "single")]
    assert metrics[0]["test_rmse"] == pytest.approx(metrics[1]["test_rmse"], abs=1e-6)
