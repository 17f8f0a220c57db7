"""Codec micro-benchmark: protobuf (upb) vs betterproto2 on the messages a Predict call moves.

Cases: parse a [1, 784] float PredictRequest (float_val, and tensor_content), with and without turning the
tensor into numpy; build-and-serialize a [64, 10] float PredictResponse from numpy (float_val and
tensor_content), and serialize an already built one. Every case is checked first: both libraries must
decode each other's bytes to the same values.

betterproto2 classes are generated at run time into bench/out/ (gitignored) from the descriptors installed
with tensorflow-serving-api: a FileDescriptorSet of `predict_pb2.DESCRIPTOR` and its dependencies, fed to
`grpc_tools.protoc --descriptor_set_in` with betterproto2_compiler's `--python_betterproto2_out` plugin. If
that cannot run, the betterproto2 column says "not measured" and why.

    python bench/codec_bench.py [--repeat 15] [--json]

Prints a markdown table of per-call medians over `--repeat` timeit repeats (each ~0.1 s long).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import timeit
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from google.protobuf import descriptor_pb2
from google.protobuf.internal import api_implementation
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2

OUT = Path(__file__).resolve().parent / "out"
PACKAGE = "bp2_predict"  # generated package, under bench/out/; its own tensorflow/ and google/ inside


def descriptor_set() -> descriptor_pb2.FileDescriptorSet:
    """predict.proto and its transitive imports, dependencies first.

    The installed descriptors carry no source_code_info, which betterproto2_compiler reads for comments:
    give each file an empty location so the plugin finds one.
    """
    files: dict[str, descriptor_pb2.FileDescriptorProto] = {}

    def add(fd: Any) -> None:
        if fd.name in files:
            return
        for dep in fd.dependencies:
            add(dep)
        proto = descriptor_pb2.FileDescriptorProto()
        fd.CopyToProto(proto)
        proto.source_code_info.location.add(path=[], span=[0, 0, 0])
        files[fd.name] = proto

    add(predict_pb2.DESCRIPTOR)
    return descriptor_pb2.FileDescriptorSet(file=list(files.values()))


def generate_betterproto2() -> ModuleType:
    """Generate bench/out/bp2_predict and import its tensorflow.serving module; raises on any failure."""
    bindir = Path(sys.executable).parent
    plugin = shutil.which("protoc-gen-python_betterproto2", path=str(bindir)) or shutil.which(
        "protoc-gen-python_betterproto2"
    )
    if plugin is None:
        raise RuntimeError("betterproto2_compiler is not installed (no protoc-gen-python_betterproto2)")
    fds = descriptor_set()
    target = OUT / PACKAGE
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    (OUT / "predict.desc").write_bytes(fds.SerializeToString())
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"--plugin=protoc-gen-python_betterproto2={plugin}",
        f"--descriptor_set_in={OUT / 'predict.desc'}",
        f"--python_betterproto2_out={target}",
        *(f.name for f in fds.file),
    ]
    # The plugin formats its output with `ruff` found on PATH: the venv's.
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"protoc --python_betterproto2_out failed: {done.stderr.strip()[-500:]}")
    sys.path.insert(0, str(OUT))
    return importlib.import_module(f"{PACKAGE}.tensorflow.serving")


def pb_tensor(array: np.ndarray, content: bool) -> tensor_pb2.TensorProto:
    dims = [tensor_shape_pb2.TensorShapeProto.Dim(size=n) for n in array.shape]
    tensor = tensor_pb2.TensorProto(
        dtype=types_pb2.DT_FLOAT, tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=dims)
    )
    if content:
        tensor.tensor_content = array.tobytes()
    else:
        tensor.float_val.extend(array.ravel().tolist())
    return tensor


def pb_response(array: np.ndarray, content: bool) -> predict_pb2.PredictResponse:
    response = predict_pb2.PredictResponse()
    response.model_spec.name = "mlp"
    response.model_spec.version.value = 1
    response.model_spec.signature_name = "serving_default"
    response.outputs["scores"].CopyFrom(pb_tensor(array, content))
    return response


def bp_tensor(tf: ModuleType, array: np.ndarray, content: bool) -> Any:
    shape = tf.TensorShapeProto(dim=[tf.TensorShapeProtoDim(size=n) for n in array.shape])
    if content:
        return tf.TensorProto(dtype=tf.DataType.DT_FLOAT, tensor_shape=shape, tensor_content=array.tobytes())
    return tf.TensorProto(dtype=tf.DataType.DT_FLOAT, tensor_shape=shape, float_val=array.ravel().tolist())


def bp_response(serving: ModuleType, tf: ModuleType, array: np.ndarray, content: bool) -> Any:
    spec = serving.ModelSpec(name="mlp", version=1, signature_name="serving_default")
    return serving.PredictResponse(model_spec=spec, outputs={"scores": bp_tensor(tf, array, content)})


def pb_to_numpy(tensor: Any) -> np.ndarray:
    shape = [d.size for d in tensor.tensor_shape.dim]
    if tensor.tensor_content:
        return np.frombuffer(tensor.tensor_content, dtype=np.float32).reshape(shape)
    return np.array(tensor.float_val, dtype=np.float32).reshape(shape)


def cases(serving: ModuleType | None) -> dict[str, tuple[Callable[[], Any], Callable[[], Any] | None]]:
    """name -> (protobuf callable, betterproto2 callable or None); each checked for agreement first."""
    rng = np.random.default_rng(0)
    image = rng.random((1, 784), dtype=np.float32)
    scores = rng.random((64, 10), dtype=np.float32)
    requests = {}
    for content in (False, True):
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "mlp"
        request.model_spec.signature_name = "serving_default"
        request.inputs["images"].CopyFrom(pb_tensor(image, content))
        requests[content] = request.SerializeToString()
    built = {content: pb_response(scores, content) for content in (False, True)}

    pb_parse = predict_pb2.PredictRequest.FromString
    table: dict[str, tuple[Callable[[], Any], Callable[[], Any] | None]] = {}
    for content, label in ((False, "float_val"), (True, "tensor_content")):
        wire = requests[content]
        table[f"parse request [1,784] {label}"] = (lambda w=wire: pb_parse(w), None)
        table[f"parse request [1,784] {label} + to numpy"] = (
            lambda w=wire: pb_to_numpy(pb_parse(w).inputs["images"]),
            None,
        )
        table[f"build + serialize response [64,10] {label}"] = (
            lambda c=content: pb_response(scores, c).SerializeToString(),
            None,
        )
        table[f"serialize built response [64,10] {label}"] = (built[content].SerializeToString, None)
    if serving is None:
        return table

    tf = importlib.import_module(f"{PACKAGE}.tensorflow")
    bp_parse = serving.PredictRequest.parse
    bp_built = {content: bp_response(serving, tf, scores, content) for content in (False, True)}
    for content, label in ((False, "float_val"), (True, "tensor_content")):
        wire = requests[content]
        # Agreement: each library reads the other's bytes to the same numbers.
        assert np.array_equal(pb_to_numpy(bp_parse(wire).inputs["images"]), image)
        for c in (False, True):
            assert np.array_equal(
                pb_to_numpy(predict_pb2.PredictResponse.FromString(bytes(bp_built[c])).outputs["scores"]),
                scores,
            )
        names = [f"parse request [1,784] {label}", f"parse request [1,784] {label} + to numpy"]
        table[names[0]] = (table[names[0]][0], lambda w=wire: bp_parse(w))
        table[names[1]] = (table[names[1]][0], lambda w=wire: pb_to_numpy(bp_parse(w).inputs["images"]))
        name = f"build + serialize response [64,10] {label}"
        table[name] = (table[name][0], lambda c=content: bytes(bp_response(serving, tf, scores, c)))
        name = f"serialize built response [64,10] {label}"
        table[name] = (table[name][0], lambda c=content: bytes(bp_built[c]))
    return table


def per_call_us(fn: Callable[[], Any], repeat: int) -> float:
    """Median over `repeat` timeit repeats, each running `fn` enough times to last ~0.1 s, in µs per call."""
    timer = timeit.Timer(fn)
    number, elapsed = timer.autorange()  # at least 0.2 s
    number = max(1, int(number * 0.1 / elapsed))
    return statistics.median(t / number for t in timer.repeat(repeat=repeat, number=number)) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15, help="timeit repeats per case (median reported)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a markdown table")
    args = parser.parse_args()

    why_not = ""
    try:
        serving: ModuleType | None = generate_betterproto2()
    except Exception as error:  # noqa: BLE001  (reported in the table; protobuf is still measured)
        serving, why_not = None, f"{type(error).__name__}: {error}"

    rows = []
    for name, (pb_fn, bp_fn) in cases(serving).items():
        pb_us = per_call_us(pb_fn, args.repeat)
        bp_us = per_call_us(bp_fn, args.repeat) if bp_fn else None
        rows.append(
            {"case": name, "protobuf_us": round(pb_us, 2), "betterproto2_us": bp_us and round(bp_us, 2)}
        )

    import betterproto2
    from google.protobuf import __version__ as protobuf_version

    versions = (
        f"protobuf {protobuf_version} ({api_implementation.Type()}), betterproto2 {betterproto2.__version__}"
    )
    if args.json:
        print(json.dumps({"versions": versions, "betterproto2_not_measured": why_not, "rows": rows}))
        return
    print(f"Codec per call, median of {args.repeat} repeats; {versions}\n")
    print("| case | protobuf upb (µs) | betterproto2 (µs) | betterproto2 / upb |")
    print("|---|---:|---:|---:|")
    for row in rows:
        bp = row["betterproto2_us"]
        ratio = f"{bp / row['protobuf_us']:.1f}x" if bp else "—"
        print(
            f"| {row['case']} | {row['protobuf_us']:.2f} | {f'{bp:.2f}' if bp else 'not measured'} | {ratio} |"
        )
    if why_not:
        print(f"\nbetterproto2 not measured: {why_not}")


if __name__ == "__main__":
    main()
