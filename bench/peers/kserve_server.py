"""KServe's Python model server (`kserve.ModelServer`, REST on uvicorn, gRPC V2 on grpcio) serving SavedModels
through a custom `kserve.Model`, for bench/peers_bench.py. Runs in KServe's venv.

REST: KServe's V1 protocol (`/v1/models/NAME:predict`, TF Serving's `instances` rows in, `predictions` out,
one input per model). gRPC: the Open Inference Protocol's ModelInfer (any number of inputs, raw outputs).
`predict` is synchronous, so KServe calls it (and TensorFlow) inline on its event loop, as a custom model
written the plain way does; KServe has no batching of its own in the Python server.

    python kserve_server.py --http_port P --grpc_port Q --model NAME=SAVED_MODEL_DIR [--model ...]
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer
from kserve.utils.numpy_codec import from_np_dtype
from tf_signature import Signature


class SavedModel(Model):
    def __init__(self, name: str, path: str) -> None:
        super().__init__(name)
        self.path = path
        self.signature: Signature | None = None

    def load(self) -> bool:
        self.signature = Signature(self.path)
        self.ready = True
        return True

    def predict(self, payload: Any, headers: Any = None) -> Any:
        assert self.signature is not None
        if isinstance(payload, InferRequest):
            outputs = self.signature({i.name: i.as_numpy() for i in payload.inputs})
            infer_outputs = []
            for name, value in outputs.items():
                output = InferOutput(name=name, shape=list(value.shape), datatype=from_np_dtype(value.dtype))
                output.set_data_from_numpy(value, binary_data=True)
                infer_outputs.append(output)
            return InferResponse(
                response_id=payload.id or "", model_name=self.name, infer_outputs=infer_outputs
            )
        (name,) = self.signature.input_names
        dtype = self.signature.inputs[name][0]
        outputs = self.signature({name: np.asarray(payload["instances"], dtype=dtype)})
        if len(outputs) == 1:
            return {"predictions": next(iter(outputs.values())).tolist()}
        lists = {k: v.tolist() for k, v in outputs.items()}
        rows = len(next(iter(lists.values())))
        return {"predictions": [{k: v[i] for k, v in lists.items()} for i in range(rows)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--http_port", type=int, required=True)
    parser.add_argument("--grpc_port", type=int, required=True)
    parser.add_argument("--model", action="append", required=True, help="NAME=SAVED_MODEL_DIR")
    args, _ = parser.parse_known_args()
    models = []
    for spec in args.model:
        name, path = spec.split("=", 1)
        model = SavedModel(name, path)
        model.load()
        models.append(model)
    ModelServer(http_port=args.http_port, grpc_port=args.grpc_port).start(models)


if __name__ == "__main__":
    main()
