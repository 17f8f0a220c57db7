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
    manifest = copy.deepcopy(one(rendered(), kind, "aspired" if kind == "ServingRuntime" else "half-plus-two"))
    node: Any = manifest
    for key in path:
        node = node[key]
    node["stroageUri"] = "s3://typo"
    with pytest.raises(jsonschema.ValidationError):
        validate(manifest)


# issue 12: one InferenceService per protocol the runtime declares: TF Serving's REST and gRPC APIs (v1,
# grpc-v1) and the Open Inference Protocol (v2, grpc-v2), on the same ports and models.
PROTOCOLS = {"half-plus-two": "v1", "half-plus-two-v2": "v2", "half-plus-two-grpc": "grpc-v1",
             "half-plus-two-grpc-v2": "grpc-v2"}


def test_inference_services_select_the_runtime_one_per_protocol(tmp_path: Path) -> None:
    manifests = rendered()
    runtime = one(manifests, "ServingRuntime")
    assert set(runtime["spec"]["protocolVersions"]) == set(PROTOCOLS.values())
    services = {m["metadata"]["name"]: m for m in manifests if m["kind"] == "InferenceService"}
    assert {name: s["spec"]["predictor"]["model"]["protocolVersion"] for name, s in services.items()} == PROTOCOLS
    (container,) = runtime["spec"]["containers"]
    options = parse_flags(entrypoint_argv(image_env(), container["args"], tmp_path))
    formats = {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
    for name, service in services.items():
        model = service["spec"]["predictor"]["model"]
        assert model["runtime"] == runtime["metadata"]["name"]
        assert model["modelFormat"]["name"] == "tensorflow"
        assert model["modelFormat"]["name"] in formats
        if model["protocolVersion"].startswith("grpc-"):  # the gRPC port, exposed as h2c
            assert model["ports"] == [{"name": "h2c", "protocol": "TCP", "containerPort": options.port}], name
        else:
            assert "ports" not in model, name  # the runtime's REST port, KServe's default 8080
            assert options.rest_api_port == 8080
        account = service["spec"]["predictor"]["serviceAccountName"]
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
