"""Regenerate the vendored KServe CRD schemas of this directory from KServe's CRD manifests.

    python tests/deploy/schemas/make_crd_schemas.py KSERVE_CHECKOUT/config/crd/full

Takes each CRD's served storage version's `openAPIV3Schema`, drops `description` texts (most of the bytes) and,
for InferenceService, keeps only what the examples use in full: `spec.predictor` without the per-framework
shorthand fields (`tensorflow`, `pytorch`, ...) and `workerSpec`, which become open objects, as do `canary`,
`explainer` and `transformer`. The result is what tests/deploy/test_kserve.py validates deploy/kserve against.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
CRDS = {
    "serving.kserve.io_servingruntimes.yaml": "kserve-servingruntime-v1alpha1.json",
    "serving.kserve.io_inferenceservices.yaml": "kserve-inferenceservice-v1beta1.json",
}
FRAMEWORKS = (
    "huggingface", "lightgbm", "onnx", "paddle", "pmml", "pytorch", "sklearn", "tensorflow", "triton", "xgboost",
)  # fmt: skip
OPEN_OBJECT: dict[str, Any] = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}


def strip_descriptions(node: Any) -> Any:
    if isinstance(node, dict):
        return {key: strip_descriptions(value) for key, value in node.items() if key != "description"}
    if isinstance(node, list):
        return [strip_descriptions(value) for value in node]
    return node


def prune_inference_service(schema: dict[str, Any]) -> None:
    spec = schema["properties"]["spec"]["properties"]
    for component in ("canary", "explainer", "transformer"):
        spec[component] = OPEN_OBJECT
    predictor = spec["predictor"]["properties"]
    for name in (*FRAMEWORKS, "workerSpec"):
        predictor[name] = OPEN_OBJECT


def main(crd_dir: Path) -> None:
    for source, target in CRDS.items():
        crd = yaml.safe_load((crd_dir / source).read_text())
        (version,) = [v for v in crd["spec"]["versions"] if v.get("storage")]
        schema = strip_descriptions(version["schema"]["openAPIV3Schema"])
        if crd["spec"]["names"]["kind"] == "InferenceService":
            prune_inference_service(schema)
        document = {
            "group": crd["spec"]["group"],
            "version": version["name"],
            "kind": crd["spec"]["names"]["kind"],
            "openAPIV3Schema": schema,
        }
        (HERE / target).write_text(
            json.dumps(document, indent=None, sort_keys=True, separators=(",", ":")) + "\n"
        )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
