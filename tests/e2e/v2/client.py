"""Triton's client library driving a server: runs in the tritonclient venv (tests/e2e/v2/client_venv.py),
never in the project's venv, and never imports the project.

Usage: `python client.py PROTOCOL URL OPS_JSON` where PROTOCOL is `http` or `grpc` and OPS_JSON a list of
operations ({"op": "infer", ...}); prints one JSON line: one result per operation, an `error` (with the
client's `status`) in place of a result when the call failed.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException


def _array(spec: dict[str, Any]) -> np.ndarray:
    if spec["datatype"] == "BYTES":
        items = [bytes.fromhex(h) for h in spec["hex"]]
        array = np.empty(len(items), dtype=object)
        array[:] = items
        return array.reshape(spec["shape"])
    dtype = {"FP32": np.float32, "FP64": np.float64, "INT32": np.int32, "INT64": np.int64, "BOOL": np.bool_,
             "INT8": np.int8, "INT16": np.int16, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
             "UINT64": np.uint64, "FP16": np.float16}[spec["datatype"]]
    return np.array(spec["values"], dtype=dtype).reshape(spec["shape"])


def _describe(array: np.ndarray | None) -> Any:
    if array is None:
        return None
    if array.dtype == object:
        items = [v.encode() if isinstance(v, str) else bytes(v) for v in array.ravel()]  # JSON data: str
        return {"shape": list(array.shape), "hex": [i.hex() for i in items]}
    return {"shape": list(array.shape), "dtype": str(array.dtype), "values": array.ravel().tolist(),
            "hex": np.ascontiguousarray(array).tobytes().hex()}


def infer(client: Any, module: Any, op: dict[str, Any]) -> Any:
    binary = op.get("binary", True)
    inputs = []
    for spec in op["inputs"]:
        tensor = module.InferInput(spec["name"], spec["shape"], spec["datatype"])
        if module is httpclient:
            tensor.set_data_from_numpy(_array(spec), binary_data=binary)
        else:
            tensor.set_data_from_numpy(_array(spec))
        inputs.append(tensor)
    outputs = None
    if op.get("outputs") is not None:
        if module is httpclient:
            outputs = [module.InferRequestedOutput(n, binary_data=binary) for n in op["outputs"]]
        else:
            outputs = [module.InferRequestedOutput(n) for n in op["outputs"]]
    result = client.infer(
        op["model"], inputs, model_version=op.get("version", ""), outputs=outputs,
        request_id=op.get("id", ""), parameters=op.get("parameters"),
    )
    response = result.get_response()
    if module is grpcclient:
        names = [o.name for o in response.outputs]
        doc = {"model_name": response.model_name, "model_version": response.model_version, "id": response.id,
               "raw": len(response.raw_output_contents)}
    else:
        names = [o["name"] for o in response["outputs"]]
        doc = {k: response.get(k) for k in ("model_name", "model_version", "id")}
        doc["binary"] = [("parameters" in o and "binary_data_size" in o["parameters"]) for o in response["outputs"]]
        doc["datatypes"] = [o["datatype"] for o in response["outputs"]]
    doc["outputs"] = {name: _describe(result.as_numpy(name)) for name in names}
    return doc


def run(client: Any, module: Any, op: dict[str, Any]) -> Any:
    kind = op["op"]
    grpc_json = {"as_json": True} if module is grpcclient else {}
    if kind == "live":
        return client.is_server_live()
    if kind == "ready":
        return client.is_server_ready()
    if kind == "model_ready":
        return client.is_model_ready(op["model"], op.get("version", ""))
    if kind == "server_metadata":
        return client.get_server_metadata(**grpc_json)
    if kind == "model_metadata":
        return client.get_model_metadata(op["model"], op.get("version", ""), **grpc_json)
    if kind == "index":
        index = client.get_model_repository_index(**grpc_json)
        return index.get("models", []) if module is grpcclient else index
    if kind == "load":
        client.load_model(op["model"])
        return True
    if kind == "unload":
        client.unload_model(op["model"])
        return True
    if kind == "infer":
        return infer(client, module, op)
    raise ValueError(f"unknown op {kind}")


def main() -> None:
    protocol, url, ops = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    module = httpclient if protocol == "http" else grpcclient
    kwargs = {"network_timeout": 120.0} if module is httpclient else {}
    client = module.InferenceServerClient(url, **kwargs)
    results = []
    for op in ops:
        try:
            results.append(run(client, module, op))
        except InferenceServerException as exc:
            results.append({"error": exc.message(), "status": exc.status()})
    print(json.dumps(results))  # noqa: T201 (the result travels to the test on stdout)


if __name__ == "__main__":
    main()
