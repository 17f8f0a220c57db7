"""PyTriton (NVIDIA Triton's C++ HTTP/gRPC frontends and scheduler around a Python callback) serving
SavedModels, for bench/peers_bench.py. Runs in PyTriton's venv.

One bound model per SavedModel, its callback calling the signature (one model instance, PyTriton's default).
Batching on: Triton's dynamic batcher (no queue delay), the callback gets the joined batch through PyTriton's
`@batch`; off: the model has no batch dimension and each request is run alone. Tensor specs come from the
signature (per-row shapes when batching); an output with only the batch dimension is sent as [-1, 1], since
Triton wants at least one dimension per row.

    python pytriton_server.py HTTP_PORT GRPC_PORT METRICS_PORT on|off NAME=SAVED_MODEL_DIR ...
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import numpy as np
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig
from tf_signature import Signature

MAX_BATCH_SIZE = 512


def bind(triton: Triton, name: str, path: str, batching: bool) -> None:
    signature = Signature(path)
    skip = 1 if batching else 0  # drop the batch dimension from the declared shapes

    def spec(key: str, dtype: np.dtype[Any], shape: tuple[int, ...]) -> Tensor:
        dims = shape[skip:] or (1,)
        return Tensor(name=key, dtype=dtype.type, shape=dims)

    flat = {k for k, (_, shape) in signature.outputs.items() if len(shape) == 1}

    def run(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        outputs = signature(inputs)
        return {k: (v.reshape(-1, 1) if k in flat and batching else v) for k, v in outputs.items()}

    infer: Callable[..., Any] = batch(run) if batching else _unbatched(run)
    config = (
        ModelConfig(max_batch_size=MAX_BATCH_SIZE, batcher=DynamicBatcher(max_queue_delay_microseconds=0))
        if batching
        else ModelConfig(batching=False)
    )
    triton.bind(
        model_name=name,
        infer_func=infer,
        inputs=[spec(k, d, s) for k, (d, s) in signature.inputs.items()],
        outputs=[spec(k, d, s) for k, (d, s) in signature.outputs.items()],
        config=config,
        strict=False,
    )


def _unbatched(
    run: Callable[..., dict[str, np.ndarray]],
) -> Callable[[list[Any]], list[dict[str, np.ndarray]]]:
    def infer(requests: list[Any]) -> list[dict[str, np.ndarray]]:
        return [run(**request) for request in requests]

    return infer


def main() -> None:
    http, grpc, metrics, mode, *specs = sys.argv[1:]
    config = TritonConfig(http_port=int(http), grpc_port=int(grpc), metrics_port=int(metrics))
    with Triton(config=config) as triton:
        for spec in specs:
            name, path = spec.split("=", 1)
            bind(triton, name, path, mode == "on")
        triton.serve()


if __name__ == "__main__":
    main()
