"""deploy/kserve: the ServingRuntime and the InferenceService validate against KServe's CRD schemas (vendored in
schemas/, strict), the rest against Kubernetes', and the runtime's container is what the server accepts: its
flags parse with the real CLI, the probe and Prometheus annotations name the REST port and paths it serves."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate  # type: ignore[import-untyped]
import pytest

from tests.deploy.helpers import (
    DEPLOY,
    KUBERNETES_VERSION,
    Manifest,
    crd_schema,
    entrypoint_argv,
    image_env,
    kustomize,
    monitoring_path,
    one,
    parse_flags,
)

KSERVE_KINDS = {
    "ServingRuntime": "serving.kserve.io/v1alpha1",
    "InferenceService": "serving.kserve.io/v1beta1",
}
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def rendered() -> list[Manifest]:
    return kustomize(DEPLOY / "kserve")


def validate(manifest: Manifest) -> None:
    if manifest["kind"] in KSERVE_KINDS:
        assert manifest["apiVersion"] == KSERVE_KINDS[manifest["kind"]]
        assert DNS_LABEL.fullmatch(manifest["metadata"]["name"])
        jsonschema.Draft7Validator(crd_schema(manifest["kind"])).validate(manifest)
    else:
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)


def test_every_object_validates() -> None:
    manifests = rendered()
    assert {m["kind"] for m in manifests} == {
        "ServingRuntime",
        "InferenceService",
        "Secret",
        "ServiceAccount",
    }
    for manifest in manifests:
        validate(manifest)


@pytest.mark.parametrize(
    ("kind", "path"),
    [("ServingRuntime", ("spec", "containers", 0)), ("InferenceService", ("spec", "predictor", "model"))],
)
def test_the_crd_validation_is_strict(kind: str, path: tuple[str | int, ...]) -> None:
    manifest = copy.deepcopy(one(rendered(), kind))
    node: Any = manifest
    for key in path:
        node = node[key]
    node["stroageUri"] = "s3://typo"
    with pytest.raises(jsonschema.ValidationError):
        validate(manifest)


def test_inference_service_selects_the_runtime() -> None:
    manifests = rendered()
    runtime = one(manifests, "ServingRuntime")
    model = one(manifests, "InferenceService")["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    formats = {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
    assert model["modelFormat"]["name"] == "tensorflow"
    assert model["modelFormat"]["name"] in formats
    assert set(runtime["spec"]["protocolVersions"]) == {"v1", "grpc-v1"}  # TF Serving's REST and gRPC APIs
    account = one(manifests, "InferenceService")["spec"]["predictor"]["serviceAccountName"]
    (secret,) = one(manifests, "ServiceAccount", account)["secrets"]
    credentials = one(manifests, "Secret", secret["name"])
    assert credentials["metadata"]["annotations"]["serving.kserve.io/s3-endpoint"]


def test_runtime_container_flags_and_ports(tmp_path: Path) -> None:
    runtime = one(rendered(), "ServingRuntime")
    (container,) = runtime["spec"]["containers"]
    assert container["name"] == "kserve-container"
    assert "command" not in container, "the image's entrypoint runs, the args are appended"
    options = parse_flags(entrypoint_argv(image_env(), container["args"], tmp_path))
    assert options.model_name == "{{.Name}}"  # KServe substitutes the InferenceService's name
    assert options.model_base_path == "/mnt/models"  # where KServe's storage initializer puts storageUri
    assert (options.rest_api_port, options.port) == (8080, 9000)  # KServe's HTTP and gRPC ports
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": options.rest_api_port}
    annotations = runtime["spec"]["annotations"]
    assert int(annotations["prometheus.kserve.io/port"]) == options.rest_api_port
    assert annotations["prometheus.kserve.io/path"] == monitoring_path()
    assert options.monitoring_config_file == "/etc/aspired/monitoring.config"
    assert container["securityContext"]["runAsNonRoot"] is True
