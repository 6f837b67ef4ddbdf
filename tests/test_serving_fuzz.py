"""Hundreds of malformed requests: each gets a 4xx (or a gRPC client-error code) and the server keeps serving."""

from __future__ import annotations

import http.client
import json
import shutil
import socket

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import (get_model_metadata_pb2, predict_pb2, prediction_log_pb2,
                                     prediction_service_pb2_grpc)

from serving_support import digits, tiny_trained_rbm
from tfimpute import savedmodel
from tfimpute.serving import client as serving_client
from tfimpute.serving import server as dev_server
from tfimpute.serving.status import ServingError

MAX_REQUEST_BYTES = 200_000  # a few digits; small so the size limit is cheap to hit
CLIENT_ERROR_CODES = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
                      grpc.StatusCode.RESOURCE_EXHAUSTED}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    savedmodel.export_model(tiny_trained_rbm(), str(root), "lmrbm")
    server = dev_server.start_server(dev_server.single_model_config("lmrbm", str(root / "lmrbm")),
                                     poll_seconds=0, rest_port=0, grpc_port=0,
                                     max_request_bytes=MAX_REQUEST_BYTES)
    yield server
    server.stop()


def malformed_rest_requests(rng: np.random.Generator) -> list[tuple[str, str, bytes]]:
    """(method, path, body) triples, each wrong in one way."""
    images, mask = digits(1, seed=0)
    good_inputs = {"images": images.tolist(), "mask": mask.tolist()}
    good = json.dumps({"inputs": good_inputs})
    predict = "/v1/models/lmrbm:predict"
    requests = []

    def body(payload) -> bytes:
        return json.dumps(payload).encode()

    # Truncated, garbled and non-object JSON.
    for cut in rng.integers(1, len(good) - 1, size=40):
        requests.append(("POST", predict, good[:cut].encode()))
    for position in rng.integers(0, len(good), size=20):
        requests.append(("POST", predict, (good[:position] + "}{" + good[position:]).encode()))
    for text in ["", "[]", "1", '"x"', "null", "true", "[" * 100_000, "\xff\xfe", "NaN", "{'a': 1}",
                 "1" * 4301, '{"inputs": ' + "1" * 4301 + "}"]:  # over Python's int-string limit: ValueError
        requests.append(("POST", predict, text.encode("latin-1")))
    # Wrong top-level structure.
    for payload in [{}, {"instances": [], "inputs": {}}, {"inputs": good_inputs, "instances": [good_inputs]},
                    {"inputs": good_inputs, "extra": 1}, {"instances": []}, {"instances": {}},
                    {"instances": [1, 2]}, {"inputs": [1, 2]}, {"inputs": good_inputs, "signature_name": 5},
                    {"inputs": good_inputs, "signature_name": None}, {"inputs": good_inputs, "signature_name": "x"},
                    {"instances": [{"images": good_inputs["images"][0]}]},
                    {"instances": [{**{k: v[0] for k, v in good_inputs.items()}, "seed": 1}]}]:
        requests.append(("POST", predict, body(payload)))
    # Unknown model, version, verb or path.
    for path in ["/v1/models/nope:predict", "/v1/models/lmrbm/versions/2:predict",
                 "/v1/models/lmrbm/versions/x:predict", "/v1/models/lmrbm/versions/-1:predict",
                 "/v1/models/lmrbm:classify", "/v1/models/lmrbm:regress", "/v1/models/lmrbm:explode",
                 "/v1/models/lmrbm", "/v1/models/lmrbm/metadata", "/v1/models:predict", "/v2/models/lmrbm:predict",
                 "/", "/v1/models/lmrbm:predict/extra"]:
        requests.append(("POST", path, good.encode()))
    for path in ["/v1/models/nope", "/v1/models/lmrbm/versions/3", "/v1/models/lmrbm/versions/x",
                 "/v1/models/nope/metadata", "/v1/models/lmrbm/versions/5/metadata", "/v1/models",
                 "/v1/models/lmrbm:predict", "/v1/other", "/nothing", "/v1/models/lmrbm/labels/stable"]:
        requests.append(("GET", path, b""))
    # Wrong inputs: names, types, shapes, values.
    flat = images.reshape(1, 784).tolist()
    wrong_inputs = [
        {"images": good_inputs["images"]}, {"mask": good_inputs["mask"]},
        {**good_inputs, "seed": [1]}, {**good_inputs, "noise": [0.0]},
        {**good_inputs, "images": "pixels"}, {**good_inputs, "images": True},
        {**good_inputs, "images": [[True] * 28] * 28}, {**good_inputs, "images": flat},
        {**good_inputs, "images": images[:, :27].tolist()}, {**good_inputs, "images": images[..., 0].tolist()},
        {**good_inputs, "images": [[[0.5]] * 28] * 27 + [[[0.5]] * 27]}, {**good_inputs, "images": {"b64": "AAAA"}},
        {**good_inputs, "mask": mask[:, :, :20].tolist()}, {**good_inputs, "images": []},
        {**good_inputs, "images": 0.5}, {**good_inputs, "images": None},
    ]
    for inputs in wrong_inputs:
        requests.append(("POST", predict, body({"inputs": inputs})))
    # Out-of-domain values at random pixels: NaN, infinities, outside [0, 1], masks outside {0, 1}.
    for _ in range(80):
        corrupt_images, corrupt_mask = images.copy(), mask.copy()
        row, column = rng.integers(0, 28, size=2)
        kind = rng.integers(0, 4)
        if kind == 0:
            corrupt_images[0, row, column, 0] = rng.choice([np.nan, np.inf, -np.inf])
        elif kind == 1:
            corrupt_images[0, row, column, 0] = rng.choice([-1.0, 1.0 + 1e-3, 255.0, -1e-3])
        else:
            corrupt_mask[0, row, column, 0] = rng.choice([0.5, 2.0, -1.0, 0.999])
        requests.append(("POST", predict, body({"inputs": {"images": corrupt_images.tolist(),
                                                           "mask": corrupt_mask.tolist()}})))
    # The sampling signature's seed: wrong type, range, shape or batch size.
    for seed in [[0.5], ["1"], [2 ** 40], [-(2 ** 40)], [[1]], [1, 2], [], [True], [None]]:
        requests.append(("POST", predict, body({"signature_name": "impute_sample",
                                                "inputs": {**good_inputs, "seed": seed}})))
    # Bodies over the size limit.
    requests.append(("POST", predict, b" " * (MAX_REQUEST_BYTES + 1)))
    return requests


def raw_http(port: int, request: bytes) -> tuple[int, dict[str, str]]:
    """Sends hand-written HTTP bytes (headers a normal client would not send); returns status and headers."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        connection.sendall(request)
        response = connection.makefile("rb")
        status = int(response.readline().split()[1])
        headers = {}
        for line in response:
            if line == b"\r\n":
                break
            key, _, value = line.decode("latin-1").partition(":")
            headers[key.strip().lower()] = value.strip()
    return status, headers


def malformed_grpc_requests() -> list[tuple[str, object]]:
    images, mask = digits(1, seed=0)
    good = {"images": images, "mask": mask}

    def request(inputs=None, name="lmrbm", signature="", version=None, output_filter=()):
        message = predict_pb2.PredictRequest()
        message.model_spec.name = name
        message.model_spec.signature_name = signature
        if version is not None:
            message.model_spec.version.value = version
        message.output_filter.extend(output_filter)
        for key, value in (good if inputs is None else inputs).items():
            proto = value if isinstance(value, tensor_pb2.TensorProto) else tf.make_tensor_proto(value)
            message.inputs[key].CopyFrom(proto)
        return message

    truncated = tf.make_tensor_proto(images)
    truncated.tensor_content = truncated.tensor_content[:-3]
    labelled = request()
    labelled.model_spec.version_label = "stable"
    requests = [
        ("Predict", request(name="nope")), ("Predict", request(version=4)), ("Predict", request(signature="x")),
        ("Predict", request(inputs={"images": images})), ("Predict", request(inputs={**good, "seed": np.int32([1])})),
        ("Predict", request(inputs={**good, "images": images.astype(np.float64)})),
        ("Predict", request(inputs={**good, "images": images[:, :, :14]})),
        ("Predict", request(inputs={**good, "images": np.full_like(images, np.nan)})),
        ("Predict", request(inputs={**good, "mask": mask * 3})),
        ("Predict", request(inputs={**good, "images": truncated})),
        ("Predict", request(inputs={**good, "images": np.array([b"png bytes"])})),
        ("Predict", request(signature="impute_sample", inputs={**good, "seed": np.int64([1])})),
        ("Predict", request(signature="impute_sample", inputs={**good, "seed": np.int32([1, 2])})),
        ("Predict", request(output_filter=["nope"])), ("Predict", labelled),
        ("GetModelMetadata", get_model_metadata_pb2.GetModelMetadataRequest()),
        ("GetModelMetadata", get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])),
    ]
    oversized = request(inputs={**good, "images": np.zeros((80, 28, 28, 1), np.float32)})
    requests.append(("Predict", oversized))
    metadata = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["other"])
    metadata.model_spec.name = "lmrbm"
    requests.append(("GetModelMetadata", metadata))
    return requests


def test_malformed_requests_get_client_errors_and_the_server_keeps_serving(served):
    rest_requests = malformed_rest_requests(np.random.default_rng(0))
    statuses = []
    for method, path, body in rest_requests:
        connection = http.client.HTTPConnection("127.0.0.1", served.rest_port, timeout=30)
        connection.request(method, path, body=body if method == "POST" else None)
        response = connection.getresponse()
        answer = json.loads(response.read())
        connection.close()
        assert 400 <= response.status < 500 and isinstance(answer.get("error"), str), (method, path, body[:80])
        statuses.append(response.status)
    header_cases = [
        b"POST /v1/models/lmrbm:predict HTTP/1.1\r\nHost: x\r\n\r\n",  # no Content-Length
        b"POST /v1/models/lmrbm:predict HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
        b"POST /v1/models/lmrbm:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n{",
        b"POST /v1/models/lmrbm:predict HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    ]
    for case in header_cases:  # the body is left unread, so the server must say it closes the connection
        status, headers = raw_http(served.rest_port, case)
        assert 400 <= status < 500 and headers.get("connection") == "close", (case, status, headers)
        statuses.append(status)

    channel = grpc.insecure_channel(f"127.0.0.1:{served.grpc_port}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    grpc_requests = malformed_grpc_requests()
    for method, message in grpc_requests:
        with pytest.raises(grpc.RpcError) as raised:
            getattr(stub, method)(message, timeout=30)
        assert raised.value.code() in CLIENT_ERROR_CODES, (method, raised.value.details())
    channel.close()

    assert len(statuses) + len(grpc_requests) >= 200 and len(statuses) >= 200
    images, mask = digits(2, seed=9)
    for protocol, port in (("rest", served.rest_port), ("grpc", served.grpc_port)):
        client = serving_client.connect(protocol, f"127.0.0.1:{port}", "lmrbm")
        assert client.status()[0]["state"] == "AVAILABLE"
        imputed = client.impute(images, mask)
        np.testing.assert_array_equal(imputed[mask > 0], images[mask > 0])
        client.close()


def predict_request(inputs: dict[str, tensor_pb2.TensorProto]) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "lmrbm"
    for name, proto in inputs.items():
        request.inputs[name].CopyFrom(proto)
    return request


def declared_only(*shape: int) -> tensor_pb2.TensorProto:
    """A float TensorProto declaring ``shape`` with no data (``tf.make_ndarray`` would zero-fill it)."""
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT)
    for size in shape:
        proto.tensor_shape.dim.add(size=size)
    return proto


def test_tensors_declaring_more_than_the_limit_are_refused_before_decoding(served):
    images, mask = digits(1, seed=0)
    good = {"images": tf.make_tensor_proto(images), "mask": tf.make_tensor_proto(mask)}
    huge = declared_only(10 ** 6, 28, 28, 1)  # 3 GB zero-filled by tf.make_ndarray, from 22 bytes
    assert len(huge.SerializeToString()) < 30
    unknown = tf.make_tensor_proto(images)
    unknown.tensor_shape.dim[0].size = -1
    unknown_rank = declared_only()
    unknown_rank.tensor_shape.unknown_rank = True
    many = {f"x{i}": declared_only(10_000) for i in range(10)}  # each fits the limit, together they do not
    channel = grpc.insecure_channel(f"127.0.0.1:{served.grpc_port}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    for inputs in [{**good, "images": huge}, {**good, "mask": huge}, {**good, "images": unknown},
                   {**good, "images": unknown_rank}, {**good, **many}]:
        with pytest.raises(grpc.RpcError) as raised:
            stub.Predict(predict_request(inputs), timeout=30)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, raised.value.details()
    answer = stub.Predict(predict_request(good), timeout=30)
    imputed = tf.make_ndarray(answer.outputs["imputed"])
    np.testing.assert_array_equal(imputed[mask > 0], images[mask > 0])
    channel.close()


def test_a_warmup_request_declaring_a_huge_tensor_fails_the_load(served, tmp_path):
    shutil.copytree(served.repository.servable("lmrbm", None).path, tmp_path / "1")
    log = prediction_log_pb2.PredictionLog()
    log.predict_log.request.CopyFrom(predict_request({"images": declared_only(10 ** 6, 28, 28, 1),
                                                      "mask": declared_only(10 ** 6, 28, 28, 1)}))
    with tf.io.TFRecordWriter(str(tmp_path / "1" / "assets.extra" / "tf_serving_warmup_requests")) as writer:
        writer.write(log.SerializeToString())
    with pytest.raises(ServingError) as raised:
        dev_server.load_version(str(tmp_path / "1"), 1, MAX_REQUEST_BYTES)
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT and "limit" in raised.value.message


def test_a_refused_body_does_not_break_a_keep_alive_client(served):
    """After a 413 the server closes the socket; its Connection: close makes the client reconnect."""
    client = serving_client.RestClient(f"127.0.0.1:{served.rest_port}", "lmrbm")
    for _ in range(2):
        with pytest.raises(ServingError) as raised:
            client.request("POST", "/v1/models/lmrbm:predict", b" " * (MAX_REQUEST_BYTES + 1))
        assert raised.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED, raised.value
        assert client.status()[0]["state"] == "AVAILABLE"
    client.close()
