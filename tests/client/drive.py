"""Scenarios run by the client tests inside a venv holding only aspired-client (issue 14): each prints one
JSON document on stdout. `python drive.py SCENARIO ARGS...`. Imports numpy and aspired_client only, so the
tests can also import `samples()` from it to build the official client's requests from the same arrays.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

# dtype name (TF's) -> numpy dtype of the sample; bfloat16 is sent from float32 values (no ml_dtypes here)
DTYPES = {
    "float": "float32", "double": "float64", "int32": "int32", "uint8": "uint8", "int16": "int16",
    "int8": "int8", "string": "object", "complex64": "complex64", "int64": "int64", "bool": "bool",
    "bfloat16": "float32", "uint16": "uint16", "complex128": "complex128", "half": "float16",
    "uint32": "uint32", "uint64": "uint64",
}  # fmt: skip
JSON_DTYPES = [
    "float",
    "double",
    "int32",
    "uint8",
    "int16",
    "int8",
    "string",
    "int64",
    "bool",
    "uint32",
    "uint64",
]


def samples() -> dict[str, np.ndarray]:
    """A [2, 2] array per dtype (and [1, 1] ones, which TF writes in typed fields, under `<dtype>_1`)."""
    out: dict[str, np.ndarray] = {}
    for name, dtype in DTYPES.items():
        if name == "string":
            value = np.array([[b"a", b"\xff\x00"], [b"", b"xyz"]], dtype=object)
        elif name == "bool":
            value = np.array([[True, False], [False, True]])
        elif dtype.startswith("complex"):
            value = np.array([[1 + 2j, -3.5j], [0, 4]], dtype=dtype)
        else:
            value = np.array([[1, 2], [3, 100]], dtype=dtype)
        out[name] = value
        out[f"{name}_1"] = value[:1, :1].copy()
    return out


def encode(value: Any) -> Any:
    """JSON form of results: arrays as {dtype, shape, value} (bytes as base64), dataclasses as dicts."""
    if isinstance(value, np.ndarray):
        flat = value.ravel().tolist()
        if value.dtype == object:
            flat = [base64.b64encode(item).decode() for item in flat]
        elif value.dtype.kind == "c":
            flat = [[item.real, item.imag] for item in flat]
        return {"dtype": str(value.dtype), "shape": list(value.shape), "value": flat}
    if isinstance(value, dict):
        return {str(k): encode(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [encode(v) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        return {k: encode(getattr(value, k)) for k in value.__dataclass_fields__ if k != "signature_def_map"}
    return value


def attempt(function: Callable[[], Any]) -> Any:
    from aspired_client import ServingError

    try:
        return {"ok": encode(function())}
    except ServingError as error:
        return {
            "error": {"code": error.code.name, "message": error.message, "http_status": error.http_status}
        }


def scenario_environment() -> Any:
    found = {}
    for module in ("tensorflow", "tensorflow_serving", "grpc", "httpx", "numpy"):
        try:
            __import__(module)
            found[module] = True
        except ImportError:
            found[module] = False
    return found


def scenario_requests() -> Any:
    """Serialized (deterministic) PredictRequests for every sample, and example requests."""
    from aspired_client import _ops

    predict = {
        name: base64.b64encode(
            _ops.predict_request("m", {"x": value}, signature="s").SerializeToString(deterministic=True)
        ).decode()
        for name, value in samples().items()
    }
    return {"predict": predict}


def scenario_api(target: str) -> Any:
    """Every method (sync) against the multi-model server of tests/client/conftest.py."""
    from aspired_client import Client

    x = np.array([[1.0], [2.0], [5.0]], dtype=np.float32)
    with Client(target, timeout=60) as client:
        return {
            "predict": attempt(lambda: client.predict("half_plus_two", {"x": x})),
            "predict_signature": attempt(
                lambda: client.predict("half_plus_two", {"inputs": x}, signature="regress_x2_to_y3")
            ),
            "predict_version_123": attempt(lambda: client.predict("two_versions", {"x": x}, version=123)),
            "predict_version_124": attempt(lambda: client.predict("two_versions", {"x": x}, version=124)),
            "predict_label_stable": attempt(lambda: client.predict("two_versions", {"x": x}, label="stable")),
            "predict_label_canary": attempt(lambda: client.predict("two_versions", {"x": x}, label="canary")),
            "predict_outputs": attempt(lambda: client.predict("half_plus_two", {"x": x}, outputs=["y"])),
            "classify": attempt(
                lambda: client.classify(
                    "half_plus_two", [{"x": 1.0}, {"x": [2.0]}], signature="classify_x_to_y"
                )
            ),
            "classify_context": attempt(
                lambda: client.classify(
                    "half_plus_two", [{}], context={"x": 4.0}, signature="classify_x_to_y"
                )
            ),
            "regress": attempt(
                lambda: client.regress(
                    "half_plus_three", [{"x": 1.0}, {"x": 2.0}], signature="tensorflow/serving/regress"
                )
            ),
            "regress_version": attempt(
                lambda: client.regress("two_versions", [{"x": 1.0}], version=124, signature="regress_x_to_y")
            ),
            "metadata": attempt(lambda: client.metadata("half_plus_two")),
            "metadata_version": attempt(lambda: client.metadata("two_versions", version=123)),
            "metadata_label": attempt(lambda: client.metadata("two_versions", label="canary")),
            "status": attempt(lambda: client.status("two_versions")),
            "status_version": attempt(lambda: client.status("two_versions", version=124)),
            "health": attempt(client.health),
            "health_model": attempt(lambda: client.health("half_plus_two")),
            "error_model": attempt(lambda: client.predict("no_such_model", {"x": x})),
            "error_version": attempt(lambda: client.predict("two_versions", {"x": x}, version=7)),
            "error_label": attempt(lambda: client.predict("two_versions", {"x": x}, label="nope")),
            "error_signature": attempt(lambda: client.predict("half_plus_two", {"x": x}, signature="nope")),
            "error_input": attempt(lambda: client.predict("half_plus_two", {"nope": x})),
            "error_output": attempt(lambda: client.predict("half_plus_two", {"x": x}, outputs=["nope"])),
            "error_status": attempt(lambda: client.status("no_such_model")),
            "error_metadata": attempt(lambda: client.metadata("no_such_model")),
            "error_regress": attempt(lambda: client.regress("half_plus_two", [{"x": 1.0}], signature="nope")),
        }


def scenario_api_async(target: str) -> Any:
    """The same client methods awaited, concurrently."""
    from aspired_client import AsyncClient, ServingError

    x = np.array([[1.0], [2.0]], dtype=np.float32)

    async def main() -> Any:
        async with AsyncClient(target, timeout=60) as client:
            results = await asyncio.gather(
                client.predict("half_plus_two", {"x": x}),
                client.predict("two_versions", {"x": x}, label="canary"),
                client.classify("half_plus_two", [{"x": 1.0}], signature="classify_x_to_y"),
                client.regress("half_plus_three", [{"x": 1.0}], signature="tensorflow/serving/regress"),
                client.metadata("two_versions", version=124),
                client.status("two_versions"),
                client.health(),
                client.predict("no_such_model", {"x": x}),
                return_exceptions=True,
            )
        return [
            {"error": {"code": r.code.name, "message": r.message}}
            if isinstance(r, ServingError)
            else {"ok": encode(r)}
            for r in results
        ]

    return asyncio.run(main())


def scenario_dtypes(target: str) -> Any:
    """Each dtype's sample through the identity model's signature of that name (tests/e2e/test_dtypes.py)."""
    from aspired_client import Client, make_tensor_proto

    names = DTYPES if not target.startswith("http") else JSON_DTYPES
    out = {}
    with Client(target, timeout=60) as client:
        for name in names:
            value = samples()[name]
            sent = make_tensor_proto(value, dtype="bfloat16") if name == "bfloat16" else value
            out[name] = attempt(functools.partial(client.predict, "identity", {"x": sent}, signature=name))
    return out


def scenario_reload(target: str, rest_url: str, config_text: str) -> Any:
    from aspired_client import Client

    with Client(target, timeout=60) as client:
        result = {"reload": attempt(lambda: client.reload_config(config_text))}
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            states = [s.state for s in client.status("half_plus_three")]
            if states and all(state == "END" for state in states):
                break
            time.sleep(0.2)
        result["half_plus_three"] = attempt(lambda: client.status("half_plus_three"))
        result["bad_reload"] = attempt(
            lambda: client.reload_config("model_config_list { config { name: 'x' } }")
        )
    with Client(rest_url, timeout=60) as rest:
        result["rest_reload"] = attempt(lambda: rest.reload_config(config_text))
    return result


def scenario_unreachable(target: str) -> Any:
    from aspired_client import Client, ServingError

    with Client(target, timeout=30) as client:
        try:
            client.status("m")
        except ServingError as error:
            return {"code": error.code.name, "message": error.message}
    return {"code": "OK"}


def scenario_import_time() -> Any:
    started = time.perf_counter()
    import aspired_client  # noqa: F401

    return {"seconds": time.perf_counter() - started}


def main(argv: list[str]) -> int:
    scenario = globals()[f"scenario_{argv[0]}"]
    sys.stdout.write(json.dumps(scenario(*argv[1:])) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
