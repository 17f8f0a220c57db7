"""Model warmup: replay a version's warmup records before it becomes AVAILABLE, so its first real request does
not pay for graph initialisation.

Mirrors TF Serving's `servables/tensorflow/saved_model_warmup.cc`: each record is replayed
`--num_request_iterations_for_warmup` times (default once) through the same steps as a request of its kind
(`RunPredict`, `RunClassify`, `RunRegress`, `RunMultiInference`): the same prepare and finish steps as the
frontends' requests, around the servable's own run (the version is not in the serving map yet, and the
loader's thread is already off the event loop). Any error fails the load; a log type other than those four is
UNIMPLEMENTED. Blocking: runs in the loader's thread.
"""

from __future__ import annotations

from pathlib import Path

from tensorflow_serving.apis import prediction_log_pb2

from svc.errors import Code, ServingError
from svc.inference.classify_regress import CLASSIFY, REGRESS, multi_inference_now, run_examples_now
from svc.inference.core import run_now
from svc.inference.predict import check_predict_signature, finish_predict, prepare_predict
from svc.servables.saved_model import Servable
from svc.servables.warmup import WARMUP_FILE, load_logs
from svc.types import MAX_ELEMENTS


def replay(servable: Servable, log: prediction_log_pb2.PredictionLog, method_name_check: bool = False) -> None:
    """Run one logged request against `servable` (its model_spec's name and version do not route)."""
    match log.WhichOneof("log_type"):
        case "predict_log":
            request = log.predict_log.request
            name = request.model_spec.signature_name
            signature = check_predict_signature(servable, name, request.inputs)
            prepared = prepare_predict(signature, name, request.inputs, request.output_filter, MAX_ELEMENTS)
            finish_predict(prepared, servable.version, run_now(servable, prepared.task))
        case "classify_log":
            request_c = log.classify_log.request
            run_examples_now(servable, request_c.model_spec.signature_name, request_c.input, CLASSIFY,
                             method_name_check)
        case "regress_log":
            request_r = log.regress_log.request
            run_examples_now(servable, request_r.model_spec.signature_name, request_r.input, REGRESS,
                             method_name_check)
        case "multi_inference_log":
            multi_inference_now(servable, log.multi_inference_log.request, method_name_check)
        case None:
            return
        case other:
            number = prediction_log_pb2.PredictionLog.DESCRIPTOR.fields_by_name[other].number
            raise ServingError(Code.UNIMPLEMENTED, f"Unsupported log_type for warmup: {number}")


def warm_up(servable: Servable, local_dir: str, iterations: int = 0, method_name_check: bool = False) -> int:
    """Replay the version's warmup file, if it has one; returns the number of requests run."""
    path = Path(local_dir) / WARMUP_FILE
    if not path.is_file():
        return 0
    logs = load_logs(path)
    repeat = iterations if iterations > 0 else 1
    runnable = [log for log in logs if log.WhichOneof("log_type") is not None]  # no log_type: skipped
    for log in runnable:
        for _ in range(repeat):
            replay(servable, log, method_name_check)
    return len(runnable) * repeat
