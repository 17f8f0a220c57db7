"""Malformed input thrown at a running server: every answer is a client error, never a 5xx or an
INTERNAL/UNKNOWN status, and the server keeps serving afterwards."""

from __future__ import annotations

import json
from collections.abc import Iterator

import grpc
import httpx
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

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
