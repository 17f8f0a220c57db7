"""Regenerate `svc/_proto/` and `clients/python/aspired_client/_pb/` (`make proto`): grpclib stubs for TF Serving's
services, our config messages, and the TF-free client's private copy of TF Serving's messages.

Three protoc runs (grpcio-tools' bundled protoc, `python -m grpc_tools.protoc`):

1. grpclib stubs for `tensorflow_serving/apis/prediction_service.proto` and `model_service.proto`. The
   .proto sources are not installed anywhere, so their descriptors are taken from the installed
   tensorflow-serving-api modules (`prediction_service_pb2`, `model_service_pb2`) and their transitive
   dependencies (TensorFlow core and google.protobuf files included), serialized as a `FileDescriptorSet`
   (dependencies first) and handed to protoc with `--descriptor_set_in`. The stubs thus match exactly the
   message classes clients and server use.
2. `--python_out` / `--pyi_out` for our own .proto files, `proto/aspired/config.proto` (wrappers.proto from
   grpcio-tools' include directory) and `proto/inference/grpc_service.proto` (the Open Inference Protocol),
   seen by protoc as `svc/_proto/<name>` so that each module's name in the gencode is the name it is imported
   under; `--grpclib_python_out` too, for the V2 service's stubs.
3. The TF-free client's messages (`clients/python/aspired_client/_pb/`, issue 14): the descriptors of the TF
   Serving API files the client speaks (predict, classification, regression, inference, metadata, status,
   model management, prediction_log), of the SavedModel (for `aspired warmup-record`) and of grpc.health.v1,
   with their dependencies, are renamed into a private namespace before protoc sees them: every file `X.proto` becomes `aspired_client/_pb/X.proto` and
   every package `P` becomes `aspired_client._pb.P` (type references rewritten to match; google.protobuf
   files are left alone, the runtime owns them). The client's classes thus have full names such as
   `aspired_client._pb.tensorflow.serving.PredictRequest` and live beside TensorFlow's and
   tensorflow-serving-api's in the default descriptor pool without a duplicate symbol. Field numbers and
   types are untouched, so the wire bytes are the official ones; what depends on the real full names (gRPC
   method paths, `Any` type URLs) is spelled out by the client itself. The generated modules import only
   each other and google.protobuf.

Layout of the output directory (every directory has an `__init__.py`, so setuptools packages it and nothing
relies on namespace packages)::

    svc/_proto/__init__.py
    svc/_proto/tensorflow_serving/__init__.py
    svc/_proto/tensorflow_serving/apis/__init__.py
    svc/_proto/tensorflow_serving/apis/prediction_service_grpc.py  PredictionServiceBase, ...Stub
    svc/_proto/tensorflow_serving/apis/model_service_grpc.py       ModelServiceBase, ModelServiceStub
    svc/_proto/aspired/__init__.py
    svc/_proto/aspired/config_pb2.py (+ .pyi)                      BatchingParameters, MonitoringConfig, ...
    svc/_proto/inference/__init__.py
    svc/_proto/inference/grpc_service_pb2.py (+ .pyi)              ModelInferRequest, ... (package `inference`)
    svc/_proto/inference/grpc_service_grpc.py                      GRPCInferenceServiceBase, ...Stub

The .pyi files get a first line `# mypy: ignore-errors` (see `mark_stubs_unchecked`); nothing else is edited.

Imports: use `svc._proto.tensorflow_serving.apis.prediction_service_grpc`. The stubs contain absolute imports
such as `import tensorflow_serving.apis.predict_pb2`; they resolve to the installed tensorflow-serving-api
package because `svc/_proto` itself is never on `sys.path` (do not add it): `svc._proto.tensorflow_serving` is
only reachable under its full dotted name, so it cannot shadow the top-level `tensorflow_serving`. The config
module imports only `google.protobuf.wrappers_pb2`. Importing the stubs imports TensorFlow (predict_pb2
imports `tensorflow.core.framework.tensor_pb2`, which runs `tensorflow/__init__.py`); the config module does
not.

Output is deterministic (two runs are byte-identical) and holds no absolute path of the machine: protoc sees
only virtual names (`tensorflow_serving/apis/...`, `svc/_proto/aspired/config.proto`). It does depend on the
grpcio-tools and grpclib versions installed (tests/unit/test_proto_generated.py compares it with the committed
tree). The generated config module checks at import that the protobuf runtime is at least the gencode version
protoc stamps into it (grpcio-tools 1.85.1's protoc 35.1 writes 7.35.1; any protobuf 7.x >= 7.35.1 accepts
it).

Usage: `python proto/generate.py [--out DIR] [--client-out DIR] [--check]`. Without arguments both trees are
written to their places beside this script (`svc/_proto`, `clients/python/aspired_client/_pb`); with either
option only the trees named are written. An output directory is replaced as a whole; one that is not empty and
was not written by this script is refused. `--check` (run by `make lint`) writes nothing: it generates into a
temporary directory and fails, naming the files, where a tree differs from it.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.resources
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from google.protobuf import descriptor, descriptor_pb2

REPO = Path(__file__).resolve().parent.parent
PROTO_DIR = Path(__file__).resolve().parent
DEFAULT_OUT = REPO / "svc" / "_proto"
DEFAULT_CLIENT_OUT = REPO / "clients" / "python" / "aspired_client" / "_pb"

SERVICE_MODULES = (
    "tensorflow_serving.apis.prediction_service_pb2",
    "tensorflow_serving.apis.model_service_pb2",
)
SERVICE_PROTOS = (
    "tensorflow_serving/apis/prediction_service.proto",
    "tensorflow_serving/apis/model_service.proto",
)
# Our .proto files, by their name under proto/. protoc sees them as `svc/_proto/<name>` (a --proto_path
# mapping), so the generated module names itself `svc._proto.aspired.config_pb2`: message classes get the
# `__module__` they are imported under (pickle and repr work); the descriptor pool holds the file as
# `svc/_proto/aspired/config.proto`.
OWN_PROTOS = ("aspired/config.proto", "inference/grpc_service.proto")
OWN_SERVICES = ("inference/grpc_service.proto",)  # those of OWN_PROTOS that declare services (grpclib stubs)
OWN_PREFIX = "svc/_proto"

# The client's messages (issue 14): these modules and everything they import, renamed under CLIENT_PREFIX.
CLIENT_MODULES = (
    "tensorflow_serving.apis.predict_pb2",
    "tensorflow_serving.apis.classification_pb2",
    "tensorflow_serving.apis.regression_pb2",
    "tensorflow_serving.apis.inference_pb2",
    "tensorflow_serving.apis.get_model_metadata_pb2",
    "tensorflow_serving.apis.get_model_status_pb2",
    "tensorflow_serving.apis.model_management_pb2",
    "tensorflow_serving.apis.prediction_log_pb2",
    "tensorflow.core.protobuf.saved_model_pb2",
    "grpclib.health.v1.health_pb2",
)
CLIENT_PREFIX = "aspired_client._pb"
# grpclib ships grpc.health.v1 under its own file name; the client names it as upstream does.
CLIENT_FILE_RENAMES = {"grpclib/health/v1/health.proto": "grpc/health/v1/health.proto"}
RUNTIME_PACKAGE = "google.protobuf"

PACKAGE_MARKER = '"""Generated by proto/generate.py (`make proto`); do not edit."""\n'
SUBPACKAGE_INIT = '"""Generated by proto/generate.py; do not edit."""\n'
STUB_HEADER = "# mypy: ignore-errors\n"
PLUGIN = "protoc-gen-grpclib_python"


def files_in_dependency_order(
    roots: Iterable[descriptor.FileDescriptor],
) -> Iterator[descriptor.FileDescriptor]:
    """Every file reachable from `roots`, each after all of its dependencies, each once."""
    seen: set[str] = set()

    def visit(file: descriptor.FileDescriptor) -> Iterator[descriptor.FileDescriptor]:
        if file.name in seen:
            return
        seen.add(file.name)
        for dependency in file.dependencies:
            yield from visit(dependency)
        yield file

    for root in roots:
        yield from visit(root)


def descriptor_set(module_names: Iterable[str]) -> bytes:
    """A serialized FileDescriptorSet of the modules' files and their transitive dependencies."""
    roots = [importlib.import_module(name).DESCRIPTOR for name in module_names]
    file_set = descriptor_pb2.FileDescriptorSet()
    for file in files_in_dependency_order(roots):
        file.CopyToProto(file_set.file.add())
    data: bytes = file_set.SerializeToString(deterministic=True)
    return data


def private_file_name(name: str) -> str:
    if name.startswith(RUNTIME_PACKAGE.replace(".", "/") + "/"):
        return name
    return CLIENT_PREFIX.replace(".", "/") + "/" + CLIENT_FILE_RENAMES.get(name, name)


def private_type_name(name: str) -> str:
    """`.tensorflow.TensorProto` -> `.aspired_client._pb.tensorflow.TensorProto`; runtime types unchanged."""
    if not name.startswith(".") or name.startswith(f".{RUNTIME_PACKAGE}."):
        return name
    return f".{CLIENT_PREFIX}{name}"


def _rename_fields(fields: Iterable[descriptor_pb2.FieldDescriptorProto]) -> None:
    for field in fields:
        if field.type_name:
            field.type_name = private_type_name(field.type_name)
        if field.extendee:
            field.extendee = private_type_name(field.extendee)


def _rename_message(message: descriptor_pb2.DescriptorProto) -> None:
    _rename_fields(message.field)
    _rename_fields(message.extension)
    for nested in message.nested_type:
        _rename_message(nested)


def private_descriptor_set(module_names: Iterable[str]) -> bytes:
    """The modules' FileDescriptorSet (dependencies first) moved into the client's private namespace."""
    roots = [importlib.import_module(name).DESCRIPTOR for name in module_names]
    file_set = descriptor_pb2.FileDescriptorSet()
    for file in files_in_dependency_order(roots):
        proto = file_set.file.add()
        file.CopyToProto(proto)
        if proto.package == RUNTIME_PACKAGE:
            continue
        proto.name = private_file_name(proto.name)
        proto.package = f"{CLIENT_PREFIX}.{proto.package}"
        proto.dependency[:] = [private_file_name(name) for name in proto.dependency]
        for message in proto.message_type:
            _rename_message(message)
        _rename_fields(proto.extension)
        for service in proto.service:
            for method in service.method:
                method.input_type = private_type_name(method.input_type)
                method.output_type = private_type_name(method.output_type)
    data: bytes = file_set.SerializeToString(deterministic=True)
    return data


def grpclib_plugin() -> Path:
    """The grpclib protoc plugin installed beside this interpreter (its shebang names this venv)."""
    beside = Path(sys.executable).parent / PLUGIN
    if beside.exists():
        return beside
    found = shutil.which(PLUGIN)
    if found is None:
        raise SystemExit(f"{PLUGIN} not found beside {sys.executable} nor on PATH; install grpclib")
    return Path(found)


def protoc(args: list[str], cwd: Path) -> None:
    """Run grpcio-tools' protoc in `cwd` (relative output paths keep absolute paths out of its messages)."""
    command = [sys.executable, "-m", "grpc_tools.protoc", *args]
    result = subprocess.run(command, cwd=cwd, check=False, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"protoc failed ({result.returncode}): {' '.join(command)}\n{result.stderr}")


def generate_client(out: Path) -> None:
    """Write the client's private message modules to `out` (see the module docstring, point 3)."""
    with tempfile.TemporaryDirectory(prefix="aspired-proto-") as tmp:
        work = Path(tmp)
        (work / "client.pb").write_bytes(private_descriptor_set(CLIENT_MODULES))
        file_set = descriptor_pb2.FileDescriptorSet.FromString((work / "client.pb").read_bytes())
        names = [f.name for f in file_set.file if f.package != RUNTIME_PACKAGE]
        (work / "gen").mkdir()
        protoc(["--descriptor_set_in=client.pb", "--python_out=gen", "--pyi_out=gen", *names], cwd=work)
        staged = work / "gen" / CLIENT_PREFIX.replace(".", "/")
        mark_stubs_unchecked(staged)
        write_package_inits(staged)
        replace_tree(staged, out)


def generate(out: Path) -> None:
    """Write the whole generated tree to `out`, replacing what a previous run wrote there."""
    include = Path(str(importlib.resources.files("grpc_tools") / "_proto"))
    with tempfile.TemporaryDirectory(prefix="aspired-proto-") as tmp:
        work = Path(tmp)
        staged = work / "out"
        staged.mkdir()
        (work / "services.pb").write_bytes(descriptor_set(SERVICE_MODULES))
        protoc(
            [
                "--descriptor_set_in=services.pb",
                f"--plugin={PLUGIN}={grpclib_plugin()}",
                "--grpclib_python_out=out",
                *SERVICE_PROTOS,
            ],
            cwd=work,
        )
        (work / "own").mkdir()
        protoc(
            [
                f"--proto_path={OWN_PREFIX}={PROTO_DIR}",
                f"--proto_path={include}",
                "--python_out=own",
                "--pyi_out=own",
                *(f"{OWN_PREFIX}/{name}" for name in OWN_PROTOS),
            ],
            cwd=work,
        )
        protoc(
            [
                f"--proto_path={OWN_PREFIX}={PROTO_DIR}",
                f"--plugin={PLUGIN}={grpclib_plugin()}",
                "--grpclib_python_out=own",
                *(f"{OWN_PREFIX}/{name}" for name in OWN_SERVICES),
            ],
            cwd=work,
        )
        shutil.copytree(work / "own" / OWN_PREFIX, staged, dirs_exist_ok=True)
        mark_stubs_unchecked(staged)
        write_package_inits(staged)
        replace_tree(staged, out)


def mark_stubs_unchecked(root: Path) -> None:
    """Prefix each generated .pyi with `# mypy: ignore-errors`: mypy follows imports into svc/_proto, and
    under `strict` the stubs fail on their own (they subclass the untyped `Message`, use bare `Mapping`)."""
    for stub in sorted(root.rglob("*.pyi")):
        stub.write_text(STUB_HEADER + stub.read_text())


def write_package_inits(root: Path) -> None:
    """An `__init__.py` in `root` (with the marker) and in every directory below it."""
    (root / "__init__.py").write_text(PACKAGE_MARKER)
    for directory in sorted(path for path in root.rglob("*") if path.is_dir()):
        init = directory / "__init__.py"
        if not init.exists():
            init.write_text(SUBPACKAGE_INIT)


def replace_tree(staged: Path, out: Path) -> None:
    if out.exists() and any(out.iterdir()):
        marker = out / "__init__.py"
        if not marker.is_file() or marker.read_text() != PACKAGE_MARKER:
            raise SystemExit(f"refusing to replace {out}: not empty and not written by {Path(__file__).name}")
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(staged, out, dirs_exist_ok=True)


def tree(root: Path) -> dict[str, bytes]:
    """Every file under `root` (caches left out) by relative path."""
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts
    }


def check(out: Path, write: Callable[[Path], None]) -> int:
    """0 when `out` holds exactly what `write` (`generate`, `generate_client`) writes, else 1 with the stale
    files named."""
    with tempfile.TemporaryDirectory() as scratch:
        fresh = Path(scratch) / out.name
        write(fresh)
        expected, committed = tree(fresh), tree(out)
    stale = sorted(name for name in expected.keys() | committed.keys() if expected.get(name) != committed.get(name))
    for name in stale:
        print(f"{out.name}/{name} is stale: run `make proto`", file=sys.stderr)
    return 1 if stale else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, help="the server's output directory (default: svc/_proto)")
    parser.add_argument(
        "--client-out",
        type=Path,
        help="the client's output directory (default: clients/python/aspired_client/_pb)",
    )
    parser.add_argument("--check", action="store_true", help="fail if the output directory is not up to date")
    args = parser.parse_args(argv)
    if args.out is None and args.client_out is None:
        args.out, args.client_out = DEFAULT_OUT, DEFAULT_CLIENT_OUT
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # importing the service modules imports TensorFlow
    if args.check:
        stale = 0
        if args.out is not None:
            stale |= check(args.out.resolve(), generate)
        if args.client_out is not None:
            stale |= check(args.client_out.resolve(), generate_client)
        return stale
    if args.out is not None:
        generate(args.out.resolve())
        print(f"generated {args.out.resolve()}")
    if args.client_out is not None:
        generate_client(args.client_out.resolve())
        print(f"generated {args.client_out.resolve()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
