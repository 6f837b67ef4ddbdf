"""The development server's TF Serving contract, exercised by the same client over REST and gRPC."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from PIL import Image
from tensorflow_serving.config import model_server_config_pb2

from serving_support import digits, rbm_sample, tiny_trained_rbm
from tfimpute import savedmodel
from tfimpute.serving import bench as serving_bench
from tfimpute.serving import client as serving_client
from tfimpute.serving import server as dev_server
from tfimpute.serving.status import ServingError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROTOCOLS = [("rest", {}), ("rest", {"row_format": True}), ("grpc", {})]
PROTOCOL_IDS = ["rest-columnar", "rest-rows", "grpc"]


def write_config(path, models: dict[str, str]) -> str:
    config = model_server_config_pb2.ModelServerConfig()
    for name, base_path in models.items():
        config.model_config_list.config.add(name=name, base_path=base_path, model_platform="tensorflow")
    path.write_text(text_format.MessageToString(config))
    return str(path)


@pytest.fixture(scope="module")
def rbm():
    return tiny_trained_rbm()


@pytest.fixture(scope="module")
def config_file(rbm, tmp_path_factory) -> str:
    """A models.config serving the tiny LM-RBM, exported once for the module."""
    root = tmp_path_factory.mktemp("serving")
    savedmodel.export_model(rbm, str(root / "export"), "lmrbm")
    return write_config(root / "models.config", {"lmrbm": str(root / "export" / "lmrbm")})


@pytest.fixture(scope="module")
def served(config_file):
    """The development server in-process on free ports."""
    server = dev_server.start_server(dev_server.read_model_config(config_file), poll_seconds=0,
                                     rest_port=0, grpc_port=0)
    yield server
    server.stop()


def make_client(server, protocol: str, options: dict, model: str = "lmrbm", version: int | None = None):
    port = server.rest_port if protocol == "rest" else server.grpc_port
    return serving_client.connect(protocol, f"127.0.0.1:{port}", model, version, **options)


def rest_call(server, method: str, path: str, body: bytes | None = None) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=60)
    try:
        connection.request(method, path, body=body)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


@pytest.mark.parametrize("protocol,options", PROTOCOLS, ids=PROTOCOL_IDS)
def test_client_gets_the_keras_outputs(served, rbm, protocol, options):
    client = make_client(served, protocol, options)
    images, mask = digits(3, seed=1)
    np.testing.assert_allclose(client.impute(images, mask), rbm.impute(images, mask), atol=1e-6)
    np.testing.assert_allclose(client.impute(images, mask, seeds=[4, 5, 6]),
                               rbm_sample(rbm, images, mask, [4, 5, 6]), atol=1e-6)
    hidden = client.predict({"images": images, "mask": mask}, "hidden")
    assert set(hidden) == {"hidden"} and hidden["hidden"].dtype == np.float32
    np.testing.assert_allclose(hidden["hidden"], rbm.hidden(images, mask).numpy(), atol=1e-6)
    client.close()


@pytest.mark.parametrize("protocol,options", PROTOCOLS, ids=PROTOCOL_IDS)
def test_a_digit_is_reproduced_by_its_seed_whatever_the_batch(served, protocol, options):
    client = make_client(served, protocol, options)
    images, mask = digits(3, seed=2)
    alone = client.impute(images[1:2], mask[1:2], seeds=[11])
    in_batch = client.impute(images, mask, seeds=[3, 11, 7])
    np.testing.assert_array_equal(alone[0], in_batch[1])
    client.close()


@pytest.mark.parametrize("protocol,options", PROTOCOLS, ids=PROTOCOL_IDS)
def test_status_and_metadata_name_everything(served, protocol, options):
    client = make_client(served, protocol, options)
    assert client.status() == [{"version": "1", "state": "AVAILABLE",
                                "status": {"error_code": "OK", "error_message": ""}}]
    signatures = client.signatures()
    assert set(signatures) == {"serving_default", "impute_sample", "hidden", "impute_nan"}
    assert set(signatures["impute_sample"]["inputs"]) == {"images", "mask", "seed"}
    assert signatures["impute_sample"]["inputs"]["seed"]["dtype"] == "DT_INT32"
    assert set(signatures["serving_default"]["outputs"]) == {"imputed"}
    assert set(signatures["hidden"]["outputs"]) == {"hidden"}
    client.close()


@pytest.mark.parametrize("protocol,options", PROTOCOLS, ids=PROTOCOL_IDS)
def test_bad_requests_get_tf_serving_errors(served, protocol, options):
    images, mask = digits(2)
    good = {"images": images, "mask": mask}
    cases = [  # (client target, replaced inputs, signature, expected code, message pattern)
        (dict(model="nope"), {}, "serving_default", grpc.StatusCode.NOT_FOUND, r"Latest\(nope\)"),
        (dict(version=9), {}, "serving_default", grpc.StatusCode.NOT_FOUND, r"Specific\(lmrbm, 9\)"),
        ({}, {}, "no_such_signature", grpc.StatusCode.INVALID_ARGUMENT, "not found in signature def"),
        ({}, {"images": np.where(mask > 0, np.nan, images).astype(np.float32)}, "serving_default",
         grpc.StatusCode.INVALID_ARGUMENT, "NaN"),
        ({}, {"images": images + 2}, "serving_default", grpc.StatusCode.INVALID_ARGUMENT, r"\[0, 1\]"),
        ({}, {"mask": mask * 0.5}, "serving_default", grpc.StatusCode.INVALID_ARGUMENT, "0 .missing. or 1"),
        ({}, {"images": images[:, :27]}, "serving_default", grpc.StatusCode.INVALID_ARGUMENT, "shape"),
    ]
    if not options.get("row_format"):  # rows cannot even express inputs of different batch sizes
        cases.append(({}, {"mask": mask[:1]}, "serving_default", grpc.StatusCode.INVALID_ARGUMENT, "batch|shape"))
    for target, replaced, signature, code, message in cases:
        client = make_client(served, protocol, options, **target)
        with pytest.raises(ServingError) as raised:
            client.predict({**good, **replaced}, signature)
        assert raised.value.code == code, raised.value
        assert re.search(message, raised.value.message), raised.value.message
        client.close()
    client = make_client(served, protocol, options)
    with pytest.raises(ServingError) as raised:
        client.predict({**good, "seed": np.zeros(2, np.float32)}, "impute_sample")
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
    np.testing.assert_array_equal(client.impute(images, mask)[mask > 0], images[mask > 0])  # still serving
    client.close()


def failing_signature(original, error: Exception):
    """A stand-in for a loaded signature that raises ``error``; keeps the input signature requests are checked against."""

    class Failing:
        structured_input_signature = original.structured_input_signature

        def __call__(self, **inputs):
            raise error

    return Failing()


def test_failures_inside_the_server_are_internal_or_resource_exhausted(served, monkeypatch):
    servable = served.repository.servable("lmrbm", None)
    images, mask = digits(1, seed=3)
    body = json.dumps({"signature_name": "hidden", "inputs": {"images": images.tolist(), "mask": mask.tolist()}})
    cases = [  # (raised in the signature, gRPC code, HTTP status, message)
        (tf.errors.InternalError(None, None, "kernel failed\ndetails"), grpc.StatusCode.INTERNAL, 500,
         "kernel failed"),
        (tf.errors.ResourceExhaustedError(None, None, "OOM when allocating"), grpc.StatusCode.RESOURCE_EXHAUSTED,
         413, "OOM when allocating"),
        (RuntimeError("not a TensorFlow error"), grpc.StatusCode.INTERNAL, 500, "RuntimeError: not a TensorFlow error"),
    ]
    for error, code, http_status, message in cases:
        monkeypatch.setitem(servable.signatures, "hidden", failing_signature(servable.signatures["hidden"], error))
        assert rest_call(served, "POST", "/v1/models/lmrbm:predict", body.encode()) == (http_status, {"error": message})
        client = make_client(served, "grpc", {})
        with pytest.raises(ServingError) as raised:
            client.predict({"images": images, "mask": mask}, "hidden")
        assert (raised.value.code, raised.value.message) == (code, message)
        client.close()
        monkeypatch.undo()
    client = make_client(served, "rest", {})
    assert client.predict({"images": images, "mask": mask}, "hidden")["hidden"].shape == (1, 16)  # still serving
    client.close()


def test_a_rest_timeout_leaves_the_client_usable():
    """A timed-out request must not wedge the keep-alive connection: the next request reconnects."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(30)
    answer = b'{"model_version_status": []}'
    done = threading.Event()

    def serve() -> None:  # the first connection never gets an answer; the second gets one
        stalled, _ = listener.accept()
        answering, _ = listener.accept()
        answering.recv(65536)
        answering.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                          b"Content-Length: %d\r\n\r\n%s" % (len(answer), answer))
        done.wait(30)
        stalled.close()
        answering.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client = serving_client.RestClient(f"127.0.0.1:{listener.getsockname()[1]}", "lmrbm", timeout=0.5)
    try:
        with pytest.raises(ServingError) as raised:
            client.status()
        assert raised.value.code == grpc.StatusCode.DEADLINE_EXCEEDED, raised.value
        assert client.status() == []
    finally:
        done.set()
        client.close()
        thread.join(30)
        listener.close()


def test_rest_formats_and_json_shapes(served, rbm):
    images, mask = digits(2, seed=5)
    rows = [{"images": images[i].tolist(), "mask": mask[i].tolist()} for i in range(2)]
    status, answer = rest_call(served, "POST", "/v1/models/lmrbm/versions/1:predict",
                               json.dumps({"signature_name": "hidden", "instances": rows}).encode())
    assert status == 200 and set(answer) == {"predictions"}
    np.testing.assert_allclose(answer["predictions"], rbm.hidden(images, mask).numpy(), atol=1e-6)
    status, answer = rest_call(served, "POST", "/v1/models/lmrbm:predict",
                               json.dumps({"inputs": {"images": images.tolist(), "mask": mask.tolist()}}).encode())
    assert status == 200 and set(answer) == {"outputs"}
    np.testing.assert_allclose(answer["outputs"], rbm.impute(images, mask), atol=1e-6)
    status, metadata = rest_call(served, "GET", "/v1/models/lmrbm/metadata")
    assert status == 200
    assert metadata["model_spec"] == {"name": "lmrbm", "signature_name": "", "version": "1"}
    serving_default = metadata["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert serving_default["method_name"] == "tensorflow/serving/predict"
    assert serving_default["inputs"]["images"]["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in serving_default["inputs"]["images"]["tensor_shape"]["dim"]] == ["-1", "28", "28", "1"]
    status, error = rest_call(served, "GET", "/v1/models/lmrbm/versions/abc")
    assert status == 400 and error == {"error": "Failed to convert version: abc to numeric."}
    status, error = rest_call(served, "POST", "/v1/models/lmrbm:classify", b"{}")
    assert status == 400 and ":predict" in error["error"]


def test_version_policies():
    config = model_server_config_pb2.ModelConfig(name="m", base_path="/x")
    assert dev_server.served_versions([1, 3, 2], config) == {3}
    config.model_version_policy.latest.num_versions = 2
    assert dev_server.served_versions([1, 3, 2], config) == {2, 3}
    config.model_version_policy.specific.versions.extend([1, 5])
    assert dev_server.served_versions([1, 3, 2], config) == {1}
    config.model_version_policy.all.SetInParent()
    assert dev_server.served_versions([1, 3, 2], config) == {1, 2, 3}


def test_repository_models_config_maps_to_export_dir():
    configs = dev_server.read_model_config(os.path.join(REPO, "serving", "models.config"))
    assert [c.name for c in configs] == ["lmrbm", "rbm"]
    assert dev_server.local_base_path(configs[0].base_path, "export") == os.path.join("export", "lmrbm")
    assert dev_server.local_base_path("/elsewhere/lmrbm", "export") == "/elsewhere/lmrbm"


def test_a_new_version_dropped_in_is_served(rbm, tmp_path):
    savedmodel.export_model(rbm, str(tmp_path / "export"), "lmrbm")
    config = dev_server.read_model_config(write_config(tmp_path / "models.config",
                                                       {"lmrbm": str(tmp_path / "export" / "lmrbm")}))
    images, mask = digits(2, seed=6)
    newer = tiny_trained_rbm(seed=1)
    with dev_server.start_server(config, poll_seconds=0.2, rest_port=0, grpc_port=0) as server:
        client = make_client(server, "rest", {})
        np.testing.assert_allclose(client.impute(images, mask), rbm.impute(images, mask), atol=1e-6)
        savedmodel.export_model(newer, str(tmp_path / "export"), "lmrbm")
        deadline = time.monotonic() + 60
        while client.status()[0]["version"] != "2" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert [s["version"] for s in client.status()] == ["2"]  # the default policy serves the latest only
        np.testing.assert_allclose(client.impute(images, mask), newer.impute(images, mask), atol=1e-6)
        with pytest.raises(ServingError) as raised:
            make_client(server, "grpc", {}, version=1).predict({"images": images, "mask": mask})
        assert raised.value.code == grpc.StatusCode.NOT_FOUND
        client.close()


def test_polling_survives_a_base_path_vanishing_mid_scan(rbm, tmp_path, monkeypatch):
    """The base path is removed and recreated while the poller scans it; a version dropped in later is served."""
    base = tmp_path / "export" / "lmrbm"
    savedmodel.export_model(rbm, str(tmp_path / "export"), "lmrbm")
    scan = dev_server.available_versions
    raced = threading.Event()

    def racing_scan(base_path: str) -> list[int]:  # as if the path vanished between the isdir check and listdir
        try:
            os.listdir(base_path)
        except FileNotFoundError:
            raced.set()
            raise
        return scan(base_path)

    monkeypatch.setattr(dev_server, "available_versions", racing_scan)
    images, mask = digits(2, seed=8)
    newer = tiny_trained_rbm(seed=1)
    config = dev_server.single_model_config("lmrbm", str(base))
    with dev_server.start_server(config, poll_seconds=0.2, rest_port=0, grpc_port=0) as server:
        client = make_client(server, "rest", {})
        shutil.copytree(base, tmp_path / "saved")
        shutil.rmtree(base)
        assert raced.wait(30)
        np.testing.assert_allclose(client.impute(images, mask), rbm.impute(images, mask), atol=1e-6)
        shutil.copytree(tmp_path / "saved", base)
        savedmodel.export_model(newer, str(tmp_path / "export"), "lmrbm")
        deadline = time.monotonic() + 60
        while client.status()[0]["version"] != "2" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert [s["version"] for s in client.status()] == ["2"]
        np.testing.assert_allclose(client.impute(images, mask), newer.impute(images, mask), atol=1e-6)
        client.close()


def test_server_and_client_command_lines(served, config_file, rbm, tmp_path):
    """The CLIs: the server starts from a models.config on free ports; the client writes PNGs."""
    server_process, rest_port, _ = serving_bench.start_server_process([f"--model_config_file={config_file}"])
    try:
        rest = serving_client.connect("rest", f"127.0.0.1:{rest_port}", "lmrbm")
        assert rest.status()[0]["state"] == "AVAILABLE"
        rest.close()
    finally:
        server_process.terminate()
        server_process.wait(timeout=60)

    images, mask = digits(2, seed=7)
    for i in range(2):
        Image.fromarray((images[i, ..., 0] * 255).round().astype(np.uint8)).save(tmp_path / f"digit{i}.png")
        Image.fromarray((mask[i, ..., 0] * 255).astype(np.uint8)).save(tmp_path / f"mask{i}.png")
    done = subprocess.run(
        [sys.executable, "-m", "tfimpute.serving.client", "--protocol=grpc",
         f"--server=127.0.0.1:{served.grpc_port}", "--model=lmrbm",
         f"--images={tmp_path / 'digit0.png'},{tmp_path / 'digit1.png'}",
         f"--masks={tmp_path / 'mask0.png'},{tmp_path / 'mask1.png'}", f"--output_dir={tmp_path / 'out'}"],
        capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    assert sorted(os.listdir(tmp_path / "out")) == ["digit0_imputed.png", "digit1_imputed.png", "grid.png",
                                                    "imputed.npy"]
    from_png = np.round(images * 255) / 255  # what the PNG round trip leaves of the pixels
    np.testing.assert_allclose(np.load(tmp_path / "out" / "imputed.npy"), rbm.impute(from_png, mask), atol=1e-6)


def test_serving_bench_reports_latency_and_throughput():
    result = serving_bench.run(hidden_units=16, workdir=None, requests=5, warmup=1, concurrency=2,
                               requests_per_client=3)
    for protocol in ("rest", "grpc"):
        assert 0 < result[f"{protocol}_p50_ms"] <= result[f"{protocol}_p99_ms"]
        assert result[f"{protocol}_requests_per_sec_2_clients"] > 0


def test_the_batching_parameters_follow_tf_servings_rules_and_fit_every_model():
    """serving/batching_parameters.txt (not parsed here by TF Serving, whose BatchingParameters proto
    the pip packages do not ship): TF Serving refuses allowed sizes that do not increase, or whose
    last entry is not max_execution_batch_size (with large-batch splitting) or exceeds max_batch_size."""
    from tfimpute.models import registry

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "serving",
                        "batching_parameters.txt")
    with open(path) as f:
        text = "\n".join(line.split("#")[0] for line in f)
    scalars = {name: int(value) for name, value in re.findall(r"(\w+)\s*\{\s*value:\s*(\d+)\s*\}", text)}
    switches = dict(re.findall(r"(\w+)\s*\{\s*value:\s*(true|false)\s*\}", text))
    allowed = [int(size) for size in re.findall(r"allowed_batch_sizes:\s*(\d+)", text)]
    assert allowed == sorted(set(allowed)) and allowed[0] >= 1
    assert switches["enable_large_batch_splitting"] == "true"
    assert allowed[-1] == scalars["max_execution_batch_size"] <= scalars["max_batch_size"]
    assert scalars["batch_timeout_micros"] > 0 and scalars["num_batch_threads"] >= 1
    assert scalars["max_enqueued_batches"] >= 1
    for spec in registry.specs():  # no executed batch larger than a model imputes at once
        assert (spec.cls.max_impute_batch or allowed[-1]) >= allowed[-1], spec.name
