"""Malformed input thrown at a running server: every answer is a client error, never a 5xx or an
INTERNAL/UNKNOWN status, and the server keeps serving afterwards."""

from __future__ import annotations

import collections
import json
import random
import socket
from collections.abc import Iterator

import grpc
import httpx
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from tests.e2e.grpc_raw import RawCall
from tests.e2e.server import Server

pytestmark = pytest.mark.e2e

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
CLIENT_ERRORS = {400, 404, 413}
GRPC_CLIENT_ERRORS = {
    grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.OUT_OF_RANGE,
}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
bodies = st.one_of(
    st.binary(max_size=64),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {},
        optional={
            "instances": json_values, "inputs": json_values, "signature_name": json_values,
            "examples": json_values, "context": json_values,
        },
    ).map(lambda v: json.dumps(v).encode()),
)
segments = st.text(alphabet="abc/:%.?#0123456789_-~ ", min_size=0, max_size=20)


@pytest.fixture(scope="module")
def http(multi_server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=multi_server.rest_url, timeout=30) as client:
        yield client


def still_serving(http: httpx.Client) -> None:
    assert http.post("/v1/models/half_plus_two:predict", json={"instances": [1.0]}).json() == {"predictions": [2.5]}


@FUZZ
@given(body=bodies, verb=st.sampled_from(["predict", "classify", "regress"]))
def test_fuzz_rest_bodies(http: httpx.Client, body: bytes, verb: str) -> None:
    r = http.post(f"/v1/models/half_plus_two:{verb}", content=body)
    assert r.status_code == 200 or r.status_code in CLIENT_ERRORS, (body, r.status_code, r.text)
    if r.status_code != 200:
        assert "error" in r.json()


@pytest.fixture(scope="module")
def fresh_http(multi_server: Server) -> Iterator[httpx.Client]:
    """No keep-alive: a request line the HTTP layer rejects closes its connection, as it should."""
    limits = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(base_url=multi_server.rest_url, timeout=30, limits=limits) as client:
        yield client


@FUZZ
@given(path=segments, method=st.sampled_from(["GET", "POST", "PUT"]))
def test_fuzz_rest_urls(fresh_http: httpx.Client, path: str, method: str) -> None:
    r = fresh_http.request(method, "/v1/models/" + path, content=b'{"instances": [1.0]}')
    assert r.status_code < 500, (path, r.status_code, r.text)


def test_rest_still_serving_after_fuzz(http: httpx.Client) -> None:
    still_serving(http)


tensor_protos = st.builds(
    lambda dtype, dims, content, floats, strings, unknown: tensor_pb2.TensorProto(
        dtype=dtype,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in dims], unknown_rank=unknown
        ),
        tensor_content=content, float_val=floats, string_val=strings,
    ),
    dtype=st.integers(0, 40) | st.sampled_from([101, 120, 121]),
    dims=st.lists(st.integers(-2, 10**7) | st.integers(0, 4), max_size=5),
    content=st.binary(max_size=32),
    floats=st.lists(st.floats(width=32), max_size=6),
    strings=st.lists(st.binary(max_size=4), max_size=3),
    unknown=st.booleans(),
)


@FUZZ
@given(tensor=tensor_protos, alias=st.sampled_from(["x", "y", ""]))
def test_fuzz_grpc_tensors(multi_server: Server, tensor: tensor_pb2.TensorProto, alias: str) -> None:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "half_plus_two"
    request.inputs[alias].CopyFrom(tensor)
    with grpc.insecure_channel(multi_server.grpc_target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        code = grpc.StatusCode.OK
        try:
            stub.Predict(request, timeout=30)
        except grpc.RpcError as exc:
            code = exc.code()
        assert code is grpc.StatusCode.OK or code in GRPC_CLIENT_ERRORS, (tensor, code)
        ok = predict_pb2.PredictRequest()
        ok.model_spec.name = "half_plus_two"
        ok.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([[2.0]], np.float32)))
        assert stub.Predict(ok, timeout=30).outputs["y"].float_val == [3.0]


# --- issue 10: a seeded generator, 5,000+ malformed requests against one server ------------------------------

REST_SEEDS = [
    b'{"instances": [1.0, 2.0, 5.0]}',
    b'{"instances": [[1.0], [2.0]]}',
    b'{"inputs": {"x": [[1.0]]}}',
    b'{"inputs": [1.0, 2.0]}',
    b'{"signature_name": "serving_default", "instances": [{"x": 1.0}]}',
    b'{"instances": [{"b64": "AAAA"}]}',
    b'{"examples": [{"x": 1.0}, {"x": [2.0, 3.0]}]}',
    b'{"signature_name": "classify_x_to_y", "examples": [{"x": 1.0}], "context": {"x": 2.0}}',
]
REST_PATHS = [
    "/v1/models/half_plus_two:predict", "/v1/models/half_plus_two:classify", "/v1/models/half_plus_two:regress",
    "/v1/models/half_plus_two/versions/123:predict", "/v1/models/two_versions/labels/nope:predict",
    "/v1/models/no_such_model:predict", "/v1/models/counter:predict",
]
JUNK = [b"{", b"}", b"[", b"]", b'"', b",", b":", b"\\", b"\xff", b"\x00", b"1e400", b"-", b"null", b"NaN",
        b'{"b64": "!!"}', b"[[1],[1,2]]", b"[" * 200, b'"\\ud800"', b"true", b"99999999999999999999999"]


def mutate(rng: random.Random, data: bytes) -> bytes:
    """One of: truncate, flip a byte, insert junk, delete a slice, duplicate a slice."""
    choice = rng.randrange(5)
    if not data:
        return rng.choice(JUNK)
    i = rng.randrange(len(data))
    if choice == 0:
        return data[:i]
    if choice == 1:
        return data[:i] + bytes([data[i] ^ (1 << rng.randrange(8))]) + data[i + 1 :]
    if choice == 2:
        return data[:i] + rng.choice(JUNK) + data[i:]
    if choice == 3:
        return data[:i] + data[i + rng.randrange(1, 8) :]
    j = min(len(data), i + rng.randrange(1, 16))
    return data[:j] + data[i:j] + data[j:]


def grpc_seeds() -> list[tuple[str, bytes]]:
    predict = predict_pb2.PredictRequest()
    predict.model_spec.name = "half_plus_two"
    predict.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([[1.0], [2.0]], np.float32)))
    content = predict_pb2.PredictRequest()
    content.CopyFrom(predict)
    content.inputs["x"].CopyFrom(tf.make_tensor_proto(np.ones((2, 1), np.float32)))
    content.inputs["x"].tensor_content = np.ones(2, np.float32).tobytes()
    del content.inputs["x"].float_val[:]
    huge = predict_pb2.PredictRequest()
    huge.model_spec.name = "half_plus_two"
    huge.inputs["x"].dtype = 1
    for size in (0, 2**31, 2**40):
        huge.inputs["x"].tensor_shape.dim.add(size=size)
    classify = classification_pb2.ClassificationRequest()
    classify.model_spec.name = "half_plus_two"
    classify.model_spec.signature_name = "classify_x_to_y"
    classify.input.example_list.examples.add().features.feature["x"].float_list.value.append(1.0)
    metadata = get_model_metadata_pb2.GetModelMetadataRequest()
    metadata.model_spec.name = "half_plus_two"
    metadata.metadata_field.append("signature_def")
    service = "/tensorflow.serving.PredictionService/"
    return [
        (service + "Predict", predict.SerializeToString()),
        (service + "Predict", content.SerializeToString()),
        (service + "Predict", huge.SerializeToString()),
        (service + "Classify", classify.SerializeToString()),
        (service + "Regress", classify.SerializeToString()),
        (service + "GetModelMetadata", metadata.SerializeToString()),
    ]


def test_seeded_fuzz_thousands_of_malformed_requests(multi_server: Server) -> None:
    # Issue 10: >= 5,000 malformed REST and gRPC requests (truncated and invalid JSON/protobuf, inconsistent
    # shapes, zero-size tensors with huge dims, bad b64, clients that stop mid-body): no 5xx, no
    # INTERNAL/UNKNOWN, no hang, no traceback in the log, and correct answers afterwards.
    rng = random.Random(10)
    first_line = len(multi_server.lines)
    mark = multi_server.mark()
    rest_codes: collections.Counter[int] = collections.Counter()
    with httpx.Client(base_url=multi_server.rest_url, timeout=30) as http:
        for _ in range(2600):
            body = rng.choice(REST_SEEDS)
            for _ in range(rng.randrange(1, 4)):
                body = mutate(rng, body)
            r = http.post(rng.choice(REST_PATHS), content=body)
            rest_codes[r.status_code] += 1
            assert r.status_code < 500 or r.status_code == 501, (body, r.status_code, r.text)
        still_serving(http)
    grpc_codes: collections.Counter[grpc.StatusCode] = collections.Counter()
    seeds = grpc_seeds()
    with grpc.insecure_channel(multi_server.grpc_target) as channel:
        calls = {method: channel.unary_unary(method) for method, _ in seeds}
        for _ in range(2600):
            method, data = rng.choice(seeds)
            for _ in range(rng.randrange(1, 4)):
                data = mutate(rng, data)
            code = grpc.StatusCode.OK
            try:
                calls[method](data, timeout=30)
            except grpc.RpcError as exc:
                code = exc.code()
            grpc_codes[code] += 1
            assert code is grpc.StatusCode.OK or code in GRPC_CLIENT_ERRORS | {grpc.StatusCode.UNIMPLEMENTED}, (
                method, data, code
            )
    for _ in range(50):  # clients that stop mid-body
        with socket.create_connection(("127.0.0.1", multi_server.rest_port), timeout=30) as sock:
            sock.sendall(b"POST /v1/models/half_plus_two:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{")
        call = RawCall(multi_server.grpc_port)
        call.send_message(b"\x0a", declared=100, end=False)
        call.close()
    with httpx.Client(base_url=multi_server.rest_url, timeout=30) as http:
        still_serving(http)
    assert sum(rest_codes.values()) + sum(grpc_codes.values()) >= 5000
    new_lines = "\n".join(multi_server.lines[first_line:])
    assert "Traceback" not in new_lines
    statuses = {e.get("status") for e in multi_server.events("request_finished", after=mark)}
    assert not statuses & {"INTERNAL", "UNKNOWN"}
