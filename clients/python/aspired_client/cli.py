"""The client commands of the `aspired` command line (`aspired predict ...`; also `aspired-client ...` and
`python -m aspired_client ...` where only this package is installed):

    predict        --model M --input x=@x.npy|x=@x.json|x='[[1.0]]' [--output y] [--version N|--label L]
    classify/regress --model M --examples @examples.json|'[{"x": 1.0}]' [--context ...]
    status         --model M [--version N]
    metadata       --model M [--version N|--label L]
    reload         --config models.config
    health         [--model M]
    warmup-record  VERSION_DIR --input x=...|--examples ... [--signature S] [--append]  (assets.extra/...)

Every command that talks to a server takes `--server` (`host:port` for gRPC, `http://host:port` for REST;
default `localhost:8500`), `--timeout` and `--json` (machine-readable output on stdout). JSON inputs are
converted to the dtype the signature declares (asked from the server, or read from the SavedModel for
warmup-record); `.npy` inputs are sent as they are.

Exit status by error class: 0 success; 1 other server errors (INTERNAL, UNKNOWN, ...); 2 usage or a bad
local input (argument, file, JSON); 3 NOT_FOUND; 4 INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE;
5 UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED, CANCELLED (worth retrying) and a server or
model that is not healthy; 6 UNIMPLEMENTED.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final, TextIO

import numpy as np

from aspired_client import tensors
from aspired_client._pb.tensorflow.core.framework import types_pb2
from aspired_client.client import Client
from aspired_client.errors import Code, ServingError
from aspired_client.types import Signature

COMMANDS: Final = (
    "predict",
    "classify",
    "regress",
    "status",
    "metadata",
    "reload",
    "health",
    "warmup-record",
)
EXIT_OK, EXIT_SERVER, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_INVALID, EXIT_RETRY, EXIT_UNIMPLEMENTED = range(7)
_EXIT_BY_CODE: Final = {
    Code.NOT_FOUND: EXIT_NOT_FOUND,
    Code.INVALID_ARGUMENT: EXIT_INVALID,
    Code.FAILED_PRECONDITION: EXIT_INVALID,
    Code.OUT_OF_RANGE: EXIT_INVALID,
    Code.UNAVAILABLE: EXIT_RETRY,
    Code.DEADLINE_EXCEEDED: EXIT_RETRY,
    Code.RESOURCE_EXHAUSTED: EXIT_RETRY,
    Code.ABORTED: EXIT_RETRY,
    Code.CANCELLED: EXIT_RETRY,
    Code.UNIMPLEMENTED: EXIT_UNIMPLEMENTED,
}


def exit_status(code: Code) -> int:
    return _EXIT_BY_CODE.get(code, EXIT_SERVER)


class InputError(Exception):
    """A bad argument, file or JSON document given to the command line (exit status 2)."""


def main(argv: Sequence[str] | None = None, *, program: str = "aspired-client") -> int:
    args = parse(list(sys.argv[1:] if argv is None else argv), program)
    out: TextIO = sys.stdout
    try:
        handler: Callable[[argparse.Namespace, TextIO], int] = args.handler
        return handler(args, out)
    except ServingError as error:
        _report(
            args,
            {"error": error.message, "code": error.code.name, "http_status": error.http_status},
            f"{error.code.name}: {error.message}",
        )
        return exit_status(error.code)
    except (InputError, OSError, ValueError) as error:
        _report(args, {"error": str(error), "code": "USAGE"}, str(error))
        return EXIT_USAGE


def _report(args: argparse.Namespace, document: dict[str, Any], text: str) -> None:
    if getattr(args, "json", False):
        sys.stdout.write(json.dumps(document) + "\n")
    else:
        sys.stderr.write(f"error: {text}\n")


def parse(argv: list[str], program: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=program, description="TF Serving client commands (no TensorFlow).")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        name: str, handler: Callable[..., int], help: str, server: bool = True
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        if server:
            sub.add_argument(
                "--server", default="localhost:8500", help="host:port (gRPC) or http://host:port"
            )
            sub.add_argument("--timeout", type=float, default=30.0, help="seconds (default 30)")
        sub.add_argument("--json", action="store_true", help="machine-readable output")
        sub.set_defaults(handler=handler)
        return sub

    def model(sub: argparse.ArgumentParser, *, label: bool = True, signature: bool = True) -> None:
        sub.add_argument("--model", required=True, help="model name")
        choice = sub.add_mutually_exclusive_group()
        choice.add_argument("--version", type=int, help="version (default: the latest)")
        if label:
            choice.add_argument("--label", help="version label")
        if signature:
            sub.add_argument("--signature", help="signature key (default serving_default)")

    predict = command("predict", _predict, "Predict with numpy/JSON inputs.")
    model(predict)
    _tensor_arguments(predict)
    predict.add_argument("--output", action="append", help="output alias to return (repeatable)")
    for name, handler in (("classify", _classify), ("regress", _regress)):
        sub = command(name, handler, f"{name.capitalize()} tf.Examples given as JSON objects of features.")
        model(sub)
        sub.add_argument("--examples", required=True, help="@file.json or a JSON list of feature objects")
        sub.add_argument("--context", help="@file.json or a JSON object of context features")
    status = command("status", _status, "Version states of a model.")
    model(status, label=False, signature=False)
    metadata = command("metadata", _metadata, "Signatures of a model.")
    model(metadata, signature=False)
    reload = command("reload", _reload, "Replace the server's model config (gRPC ReloadConfig).")
    reload.add_argument("--config", required=True, type=Path, help="a models.config (text ModelServerConfig)")
    health = command("health", _health, "Is the server (or a model) serving? Exit 0 if so, 5 if not.")
    health.add_argument("--model", help="model name (default: the whole server)")
    warmup = command(
        "warmup-record", _warmup_record, "Write a SavedModel version's warmup file.", server=False
    )
    warmup.add_argument("version_dir", type=Path, help="the version directory (holding saved_model.pb)")
    warmup.add_argument("--model", default="", help="model name written into the records (not used to route)")
    warmup.add_argument("--signature", help="signature key (default serving_default)")
    _tensor_arguments(warmup)
    warmup.add_argument(
        "--examples",
        help="@file.json or a JSON list of feature objects: a classify or regress record (by the signature's "
        "method) instead of a predict record",
    )
    warmup.add_argument("--context", help="@file.json or a JSON object of context features (with --examples)")
    warmup.add_argument("--repeat", type=int, default=1, help="write the record this many times")
    warmup.add_argument("--append", action="store_true", help="add to an existing warmup file")
    return parser.parse_args(argv)


def _tensor_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="ALIAS=VALUE",
        help="ALIAS=@file.npy, ALIAS=@file.json or ALIAS=<JSON> (repeatable)",
    )
    sub.add_argument(
        "--dtype", action="append", default=[], metavar="ALIAS=DTYPE", help="dtype of a JSON input"
    )


# --- inputs ---------------------------------------------------------------------------------------------


def _load_json(spec: str) -> Any:
    text = Path(spec[1:]).read_text() if spec.startswith("@") else spec
    try:
        return json.loads(text)
    except ValueError as error:
        raise InputError(f"not JSON: {spec[:80]!r}: {error}") from None


def _pairs(items: Sequence[str], what: str) -> dict[str, str]:
    pairs = {}
    for item in items:
        alias, equals, value = item.partition("=")
        if not equals or not alias:
            raise InputError(f"{what} must be ALIAS=VALUE, got {item!r}")
        pairs[alias] = value
    return pairs


def _string_leaf(value: Any) -> bytes:
    if isinstance(value, dict) and set(value) == {"b64"}:
        return base64.b64decode(value["b64"])
    if isinstance(value, str):
        return value.encode()
    raise InputError(f"a string input holds strings or {{'b64': ...}}, not {value!r}")


def read_inputs(
    items: Sequence[str], dtypes: Sequence[str], signature: Callable[[], Signature | None]
) -> dict[str, Any]:
    """Arrays from `ALIAS=@file.npy|@file.json|JSON`; a JSON value gets its dtype from `--dtype`, else from
    `signature()` (called only when a JSON input needs it)."""
    explicit = _pairs(dtypes, "--dtype")
    inputs: dict[str, Any] = {}
    for alias, spec in _pairs(items, "--input").items():
        if spec.startswith("@") and spec.endswith(".npy"):
            inputs[alias] = np.load(spec[1:], allow_pickle=False)
            continue
        value = _load_json(spec)
        if alias in explicit:
            data_type = tensors.data_type(explicit[alias])
        else:
            found = signature()
            if found is None or alias not in found.inputs:
                known = "" if found is None else f"; the signature's inputs are {sorted(found.inputs)}"
                raise InputError(f"no dtype for JSON input {alias!r}: give --dtype {alias}=...{known}")
            data_type = tensors.data_type(found.inputs[alias].dtype)
        if data_type == types_pb2.DT_STRING:
            array = np.array(_nested(value, _string_leaf), dtype=object)
        else:
            array = np.asarray(value, dtype=tensors.numpy_dtype(data_type))
        inputs[alias] = tensors.make_tensor_proto(array, dtype=types_pb2.DataType.Name(data_type))
    return inputs


def _nested(value: Any, leaf: Callable[[Any], Any]) -> Any:
    return [_nested(item, leaf) for item in value] if isinstance(value, list) else leaf(value)


# --- outputs --------------------------------------------------------------------------------------------


def _json_value(array: Any) -> Any:
    array = np.asarray(array)
    if array.dtype == object:
        return _nested(array.tolist(), lambda b: {"b64": base64.b64encode(b).decode()})
    if array.dtype.kind == "c":
        return _nested(array.tolist(), lambda c: [c.real, c.imag])
    return array.astype(np.float64).tolist() if array.dtype.kind == "f" else array.tolist()


def _print_json(out: TextIO, document: Any) -> None:
    out.write(json.dumps(document) + "\n")


# --- commands -------------------------------------------------------------------------------------------


def _predict(args: argparse.Namespace, out: TextIO) -> int:
    with Client(args.server, timeout=args.timeout) as client:

        def signature() -> Signature | None:
            metadata = client.metadata(args.model, args.version, args.label)
            found: Signature | None = metadata.signatures.get(args.signature or "serving_default")
            return found

        inputs = read_inputs(args.input, args.dtype, signature)
        outputs = client.predict(args.model, inputs, args.version, args.label, args.signature, args.output)
    if args.json:
        _print_json(out, {"outputs": {alias: _json_value(v) for alias, v in sorted(outputs.items())}})
    else:
        out.writelines(
            f"{alias}: {value.dtype} {list(value.shape)}\n{np.array2string(value)}\n"
            for alias, value in sorted(outputs.items())
        )
    return EXIT_OK


def _examples(args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    examples = _load_json(args.examples)
    context = None if args.context is None else _load_json(args.context)
    if not isinstance(examples, list) or not all(isinstance(e, dict) for e in examples):
        raise InputError("--examples must be a JSON list of objects (feature name -> value or list)")
    if context is not None and not isinstance(context, dict):
        raise InputError("--context must be a JSON object")

    def decode(features: dict[str, Any]) -> dict[str, Any]:
        return {
            k: _nested(v, lambda x: _string_leaf(x) if isinstance(x, dict) else x)
            for k, v in features.items()
        }

    return [decode(e) for e in examples], None if context is None else decode(context)


def _classify(args: argparse.Namespace, out: TextIO) -> int:
    examples, context = _examples(args)
    with Client(args.server, timeout=args.timeout) as client:
        results = client.classify(args.model, examples, context, args.version, args.label, args.signature)
    if args.json:
        _print_json(out, {"results": [[[label, score] for label, score in r] for r in results]})
    else:
        out.writelines(
            f"{index}: " + ", ".join(f"{label or '-'}={score:g}" for label, score in classes) + "\n"
            for index, classes in enumerate(results)
        )
    return EXIT_OK


def _regress(args: argparse.Namespace, out: TextIO) -> int:
    examples, context = _examples(args)
    with Client(args.server, timeout=args.timeout) as client:
        results = client.regress(args.model, examples, context, args.version, args.label, args.signature)
    if args.json:
        _print_json(out, {"results": results})
    else:
        out.write("".join(f"{index}: {value:g}\n" for index, value in enumerate(results)))
    return EXIT_OK


def _status(args: argparse.Namespace, out: TextIO) -> int:
    with Client(args.server, timeout=args.timeout) as client:
        statuses = client.status(args.model, args.version)
    if args.json:
        _print_json(out, {"model_version_status": [dataclasses.asdict(s) for s in statuses]})
    else:
        for s in statuses:
            error = "" if s.error_code == "OK" else f"  {s.error_code}: {s.error_message}"
            out.write(f"{args.model}  version {s.version}  {s.state}{error}\n")
    return EXIT_OK


def _metadata(args: argparse.Namespace, out: TextIO) -> int:
    with Client(args.server, timeout=args.timeout) as client:
        metadata = client.metadata(args.model, args.version, args.label)
    if args.json:
        document = dataclasses.asdict(metadata)
        document.pop("signature_def_map")
        _print_json(out, document)
        return EXIT_OK
    out.write(f"{metadata.name} version {metadata.version}\n")
    for key, signature in metadata.signatures.items():
        out.write(f"signature {key!r} ({signature.method_name})\n")
        for kind, specs in (("input", signature.inputs), ("output", signature.outputs)):
            for alias, spec in specs.items():
                shape = "unknown rank" if spec.shape is None else list(spec.shape)
                out.write(f"  {kind} {alias}: {spec.dtype} {shape} ({spec.name})\n")
    return EXIT_OK


def _reload(args: argparse.Namespace, out: TextIO) -> int:
    from google.protobuf import text_format

    from aspired_client import _ops

    try:
        config = _ops.model_server_config(args.config.read_text())
    except text_format.ParseError as error:
        raise InputError(f"{args.config}: {error}") from None
    with Client(args.server, timeout=args.timeout) as client:
        client.reload_config(config)
    if args.json:
        _print_json(out, {"status": "OK"})
    else:
        out.write("OK\n")
    return EXIT_OK


def _health(args: argparse.Namespace, out: TextIO) -> int:
    with Client(args.server, timeout=args.timeout) as client:
        serving = client.health(args.model)
    state = "SERVING" if serving else "NOT_SERVING"
    if args.json:
        _print_json(out, {"status": state})
    else:
        out.write(state + "\n")
    return EXIT_OK if serving else EXIT_RETRY


def _warmup_record(args: argparse.Namespace, out: TextIO) -> int:
    from aspired_client import warmup

    if args.repeat < 1:
        raise InputError("--repeat must be at least 1")
    signatures = warmup.saved_model_signatures(args.version_dir)
    key = args.signature or "serving_default"
    if key not in signatures:
        raise InputError(f"{args.version_dir}: no signature {key!r}; it has {sorted(signatures)}")
    if args.examples is not None:
        if args.input:
            raise InputError("give --input (a predict record) or --examples (classify/regress), not both")
        method = signatures[key].method_name.rsplit("/", 1)[-1]
        if method not in ("classify", "regress"):
            raise InputError(f"signature {key!r} is {signatures[key].method_name!r}: --examples needs a classify "
                             "or regress signature")  # fmt: skip
        examples, context = _examples(args)
        log = warmup.examples_log(method, args.model, examples, context, args.signature)
    else:
        if args.context is not None:
            raise InputError("--context goes with --examples")
        inputs = read_inputs(args.input, args.dtype, lambda: signatures[key])
        missing = sorted(set(signatures[key].inputs) - set(inputs))
        if missing:
            raise InputError(f"signature {key!r} also needs the inputs {missing}")
        log = warmup.predict_log(args.model, inputs, args.signature)
    path = warmup.write_warmup_file(args.version_dir, [log] * args.repeat, append=args.append)
    count = len(warmup.read_warmup_file(path))
    if args.json:
        _print_json(out, {"path": str(path), "records": count})
    else:
        out.write(f"wrote {path} ({count} records)\n")
    return EXIT_OK
