"""An MLServer custom runtime (`MLModel`) serving a SavedModel, for bench/peers_bench.py. Runs in MLServer's
venv; `write_repository` lays out the settings MLServer reads (`mlserver start DIR`).

The runtime decodes every input with MLServer's NumpyCodec (JSON `data` or `raw_input_contents`), calls the
signature and encodes every output the same way. With batching on, MLServer's adaptive batching groups
requests (`max_batch_size` requests, waiting at most `max_batch_time` for them) and splits the answer.
MLServer's own defaults stay as they are (one parallel inference worker process, metrics on).

    python mlserver_runtime.py DIR HTTP_PORT GRPC_PORT METRICS_PORT on|off NAME=SAVED_MODEL_DIR ...
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse
from tf_signature import Signature

MAX_BATCH_REQUESTS = 128
MAX_BATCH_TIME_S = 0.001


class SavedModel(MLModel):
    async def load(self) -> bool:
        assert self.settings.parameters is not None
        self.signature = Signature(str(self.settings.parameters.uri))
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        outputs = self.signature({i.name: NumpyCodec.decode_input(i) for i in payload.inputs})
        return InferenceResponse(
            model_name=self.name,
            id=payload.id,
            outputs=[NumpyCodec.encode_output(name, value) for name, value in outputs.items()],
        )


def write_repository(directory: Path, ports: tuple[int, int, int], batching: bool, models: list[str]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    http, grpc, metrics = ports
    settings = {"http_port": http, "grpc_port": grpc, "metrics_port": metrics, "host": "127.0.0.1"}
    (directory / "settings.json").write_text(json.dumps(settings))
    for spec in models:
        name, path = spec.split("=", 1)
        model = {"name": name, "implementation": "mlserver_runtime.SavedModel", "parameters": {"uri": path}}
        if batching:
            model |= {"max_batch_size": MAX_BATCH_REQUESTS, "max_batch_time": MAX_BATCH_TIME_S}
        (directory / name).mkdir(exist_ok=True)
        (directory / name / "model-settings.json").write_text(json.dumps(model))


if __name__ == "__main__":
    folder, http, grpc, metrics, mode, *specs = sys.argv[1:]
    write_repository(Path(folder), (int(http), int(grpc), int(metrics)), mode == "on", specs)
