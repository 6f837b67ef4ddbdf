"""Serving benchmark: latency of one-digit imputation requests and throughput under concurrency.

    python -m tfimpute.serving.bench --hidden_units=4096 [--workdir=TRAINED_RUN]

Exports an untrained LM-RBM with ``--hidden_units`` (the same cost as a trained one), or
the model of ``--workdir`` (any model, read only), to a temporary directory, starts the
development server on it in a separate process (so the clients' Python does not
share a GIL with the server's), then measures over REST and gRPC:

* p50 / p99 latency of sequential ``serving_default`` requests of one digit,
* requests per second with ``--concurrency`` clients, each on its own
  connection, sending one-digit requests.

Prints one JSON object as its last line. Request loops are bounded by count,
and all traffic goes to 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import sys
import tempfile
import threading
import time

from tfimpute import cli  # noqa: F401  (quiets TensorFlow's start-up logs; import first)

import numpy as np

from tfimpute.errors import InvalidInputError
from tfimpute.serving.client import ServingClient, connect

READY_LINE = re.compile(r"REST http://(?P<host>[^:]+):(?P<rest>\d+) gRPC [^:]+:(?P<grpc>\d+)")

UNTRAINED_MODEL = "lmrbm"  # the paper's model, served when no --workdir is given


def one_example(data_shape: tuple[int, ...], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A binary-ish input of the served shape with 60% of entries missing (cost does not depend on values)."""
    rng = np.random.default_rng(seed)
    images = (rng.random((1, *data_shape)) < 0.15).astype(np.float32)
    mask = (rng.random((1, *data_shape)) >= 0.6).astype(np.float32)
    return images * mask, mask


def latencies_ms(client: ServingClient, requests: int, warmup: int) -> np.ndarray:
    images, mask = one_example(client.data_shape())
    for _ in range(warmup):
        client.impute(images, mask)
    times = []
    for _ in range(requests):
        started = time.perf_counter()
        client.impute(images, mask)
        times.append((time.perf_counter() - started) * 1e3)
    return np.asarray(times)


def throughput(make_client, concurrency: int, requests_per_client: int) -> float:
    """Requests per second with ``concurrency`` threads, each with its own client."""
    clients = [make_client() for _ in range(concurrency)]
    images, mask = one_example(clients[0].data_shape())
    for client in clients:
        client.impute(images, mask)  # connect and fetch metadata before the clock starts
    start = threading.Barrier(concurrency + 1)
    errors: list[BaseException] = []

    def work(client: ServingClient) -> None:
        start.wait()
        try:
            for _ in range(requests_per_client):
                client.impute(images, mask)
        except BaseException as exc:  # reported after the join
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(c,)) for c in clients]
    for thread in threads:
        thread.start()
    start.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    for client in clients:
        client.close()
    if errors:
        raise errors[0]
    return concurrency * requests_per_client / elapsed


def start_server_process(model_flags: list[str], timeout_seconds: float = 120.0
                         ) -> tuple[subprocess.Popen, int, int]:
    """Runs ``python -m tfimpute.serving.server MODEL_FLAGS`` on free 127.0.0.1 ports.

    Returns the process and its REST and gRPC ports, read from the line it prints when ready.
    """
    process = subprocess.Popen(
        [sys.executable, "-m", "tfimpute.serving.server", *model_flags, "--rest_api_port=0", "--port=0",
         "--host=127.0.0.1"], stdout=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()

    def forward_lines() -> None:  # a thread, so that waiting for the ready line can time out
        for line in process.stdout:
            lines.put(line)

    threading.Thread(target=forward_lines, daemon=True).start()
    deadline = time.monotonic() + timeout_seconds
    while process.poll() is None and time.monotonic() < deadline:
        try:
            match = READY_LINE.search(lines.get(timeout=1.0))
        except queue.Empty:
            continue
        if match:
            return process, int(match["rest"]), int(match["grpc"])
    process.kill()
    process.wait()
    raise RuntimeError("the development server did not start")


def run(hidden_units: int, workdir: str | None, requests: int, warmup: int, concurrency: int,
        requests_per_client: int) -> dict:
    """Exports, serves and measures; returns the figures."""
    from tfimpute import savedmodel, workdir as workdirs
    from tfimpute.models import registry

    if workdir:
        model, config = workdirs.load_trained(workdir)
        name = config["model"]
    else:
        name = UNTRAINED_MODEL
        model = registry.get(name).build({"hidden_units": hidden_units})
    sizes = {setting: model.get_config()[setting] for setting in type(model).size_settings}
    result: dict = {"model": name, **sizes, "trained": bool(workdir),
                    "requests": requests, "concurrency": concurrency,
                    "requests_per_client": requests_per_client}
    with tempfile.TemporaryDirectory() as export_dir:
        savedmodel.export_model(model, export_dir, name)
        process, rest_port, grpc_port = start_server_process(
            [f"--model_name={name}", f"--model_base_path={os.path.join(export_dir, name)}"])
        try:
            addresses = {"rest": f"127.0.0.1:{rest_port}", "grpc": f"127.0.0.1:{grpc_port}"}
            for protocol, address in addresses.items():
                client = connect(protocol, address, name)
                times = latencies_ms(client, requests, warmup)
                client.close()
                result[f"{protocol}_p50_ms"] = round(float(np.percentile(times, 50)), 2)
                result[f"{protocol}_p99_ms"] = round(float(np.percentile(times, 99)), 2)
                result[f"{protocol}_requests_per_sec_{concurrency}_clients"] = round(throughput(
                    lambda: connect(protocol, address, name), concurrency, requests_per_client), 1)
        finally:
            process.terminate()
            process.wait(timeout=30)
    result["load_average_1min"] = round(os.getloadavg()[0], 2)
    return result


def main(argv: list[str]) -> None:
    from absl import flags

    FLAGS = flags.FLAGS
    if min(FLAGS.requests, FLAGS.concurrency, FLAGS.requests_per_client) < 1 or FLAGS.warmup_requests < 0:
        raise InvalidInputError("--requests, --concurrency, --requests_per_client must be >= 1")
    served = f"the model of {FLAGS.workdir}" if FLAGS.workdir else \
        f"an untrained {UNTRAINED_MODEL} with {FLAGS.hidden_units} hidden units"
    print(f"Serving benchmark: {served}, {FLAGS.requests} sequential "
          f"one-digit requests per protocol, then {FLAGS.concurrency} clients x {FLAGS.requests_per_client}; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")
    print(json.dumps(run(FLAGS.hidden_units, FLAGS.workdir, FLAGS.requests, FLAGS.warmup_requests,
                         FLAGS.concurrency, FLAGS.requests_per_client)))


def define_flags() -> None:
    from absl import flags

    from tfimpute.models import registry

    default = registry.get(UNTRAINED_MODEL).fields["hidden_units"].default
    flags.DEFINE_integer("hidden_units", default, f"Hidden units of the untrained {UNTRAINED_MODEL} (paper: 4096).")
    flags.DEFINE_string("workdir", None, "Serve this trained workdir instead (read only; any model).")
    flags.DEFINE_integer("requests", 300, "Timed sequential requests per protocol.")
    flags.DEFINE_integer("warmup_requests", 20, "Untimed requests first.")
    flags.DEFINE_integer("concurrency", 8, "Concurrent clients for the throughput figure.")
    flags.DEFINE_integer("requests_per_client", 50, "Requests each concurrent client sends.")


if __name__ == "__main__":
    from absl import app

    define_flags()
    app.run(cli.run_main(main))
