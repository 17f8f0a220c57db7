"""deploy/k8s: the kustomize base and its overlays render, every object validates against the Kubernetes schema
(strict: unknown fields are errors), and what the manifests say agrees with the server and the image: the flags
parse with the real CLI, probes and scrape annotations name the paths and ports it serves, the shutdown budget
covers the drain flags, and the server starts with the Deployment's own arguments."""

from __future__ import annotations

import copy
import os
import time
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate  # type: ignore[import-untyped]
import pytest

from svc.config_files import ModelServerConfig, parse_text_config, validate_model_server_config
from svc.options import Options
from tests.deploy.helpers import (
    DEPLOY,
    KUBERNETES_VERSION,
    EntrypointServer,
    Manifest,
    container_env,
    copied_to,
    dockerfile,
    documented_variables,
    entrypoint_argv,
    kustomize,
    monitoring_path,
    one,
    parse_flags,
    stages,
)
from tests.paths import testdata

K8S = DEPLOY / "k8s"
OVERLAYS = {"local-path": K8S / "overlays" / "local-path", "s3": K8S / "overlays" / "s3"}
EVERY_KUSTOMIZATION = [K8S / "base", *OVERLAYS.values()]


@pytest.fixture(params=sorted(OVERLAYS))
def overlay(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def manifests(overlay: str) -> list[Manifest]:
    return kustomize(OVERLAYS[overlay])


def pod_spec(manifests: list[Manifest]) -> dict[str, Any]:
    spec: dict[str, Any] = one(manifests, "Deployment", "aspired")["spec"]["template"]["spec"]
    return spec


def container(manifests: list[Manifest]) -> dict[str, Any]:
    (result,) = pod_spec(manifests)["containers"]
    return dict(result)


def port(container: dict[str, Any], name: str) -> int:
    (number,) = [p["containerPort"] for p in container["ports"] if p["name"] == name]
    return int(number)


def server_options(manifests: list[Manifest], tmp_path: Path) -> Options:
    """What the server parses in this pod: the image entrypoint's flags plus the container's args."""
    c = container(manifests)
    env = container_env(c, manifests)
    return parse_flags(entrypoint_argv(env, c["args"], tmp_path), env)


def models_config(manifests: list[Manifest], options: Options) -> ModelServerConfig:
    """The ConfigMap entry --model_config_file names, found through the pod's volume mounts."""
    path = Path(options.model_config_file)
    (mount,) = [m for m in container(manifests)["volumeMounts"] if Path(m["mountPath"]) == path.parent]
    assert "subPath" not in mount, (
        "a subPath mount never sees ConfigMap updates: the file could not be polled"
    )
    (volume,) = [v for v in pod_spec(manifests)["volumes"] if v["name"] == mount["name"]]
    config_map = one(manifests, "ConfigMap", volume["configMap"]["name"])
    return parse_text_config(config_map["data"][path.name], ModelServerConfig)


# --- schema -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("directory", EVERY_KUSTOMIZATION, ids=lambda d: d.name)
def test_every_object_validates_against_the_kubernetes_schema(directory: Path) -> None:
    rendered = kustomize(directory)
    assert rendered
    for manifest in rendered:
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)


def test_the_validation_is_strict() -> None:
    deployment = copy.deepcopy(one(kustomize(OVERLAYS["s3"]), "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}  # a typo
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_overlays_hold_what_a_deployment_needs(overlay: str, manifests: list[Manifest]) -> None:
    kinds = {m["kind"] for m in manifests}
    expected = {"Namespace", "ServiceAccount", "ConfigMap", "Deployment", "Service"}
    assert expected | {"HorizontalPodAutoscaler", "PodDisruptionBudget"} <= kinds
    assert {"local-path": "PersistentVolumeClaim", "s3": "Secret"}[overlay] in kinds
    assert {m["metadata"].get("namespace") for m in manifests if m["kind"] != "Namespace"} == {"models"}


# --- the server's flags, ports and paths ------------------------------------------------------------------


def test_the_server_accepts_every_flag(manifests: list[Manifest], tmp_path: Path) -> None:
    options = server_options(manifests, tmp_path)
    c = container(manifests)
    assert options.port == port(c, "grpc")
    assert options.rest_api_port == port(c, "http")
    assert options.model_config_file_poll_wait_seconds > 0, (
        "models.config is polled: edits apply without restarts"
    )
    assert options.monitoring_config_file == "/etc/aspired/monitoring.config"
    copied_to(options.monitoring_config_file)  # the image ships it


def test_models_config_is_a_valid_model_server_config(
    overlay: str, manifests: list[Manifest], tmp_path: Path
) -> None:
    config = models_config(manifests, server_options(manifests, tmp_path))
    validate_model_server_config(config)
    models = config.model_config_list.config
    assert [m.name for m in models] == ["half_plus_two", "half_plus_three"]
    if overlay == "s3":
        assert all(m.base_path.startswith("s3://models/") for m in models)
    else:
        (mount,) = [m for m in container(manifests)["volumeMounts"] if m["name"] == "models"]
        assert all(Path(m.base_path).parent == Path(mount["mountPath"]) for m in models)
        volumes = {v["name"]: v for v in pod_spec(manifests)["volumes"]}
        claim = volumes["models"]["persistentVolumeClaim"]["claimName"]
        one(manifests, "PersistentVolumeClaim", claim)


def test_models_config_map_keeps_its_name(manifests: list[Manifest], tmp_path: Path) -> None:
    options = server_options(manifests, tmp_path)
    volumes = [v for v in pod_spec(manifests)["volumes"] if "configMap" in v]
    names = [v["configMap"]["name"] for v in volumes]
    assert "aspired-config" in names, (
        "no hash suffix: an edit reaches the mounted file and the poll picks it up"
    )
    assert Path(options.model_config_file).name == "models.config"


def test_probes_use_the_servers_endpoints(manifests: list[Manifest], tmp_path: Path) -> None:
    c = container(manifests)
    options = server_options(manifests, tmp_path)
    paths = {kind: c[kind]["httpGet"]["path"] for kind in ("startupProbe", "readinessProbe", "livenessProbe")}
    assert paths == {"startupProbe": "/livez", "readinessProbe": "/readyz", "livenessProbe": "/livez"}
    for kind in paths:
        assert port(c, c[kind]["httpGet"]["port"]) == options.rest_api_port
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120, "room for the initial model loads"


def test_prometheus_scrapes_the_metrics_page(manifests: list[Manifest], tmp_path: Path) -> None:
    annotations = one(manifests, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    options = server_options(manifests, tmp_path)
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == options.rest_api_port
    assert annotations["prometheus.io/path"] == monitoring_path()


def test_termination_grace_covers_pre_stop_and_drain(manifests: list[Manifest], tmp_path: Path) -> None:
    options = server_options(manifests, tmp_path)
    pre_stop = container(manifests)["lifecycle"]["preStop"]["sleep"]["seconds"]
    budget = pre_stop + options.drain_delay_seconds + options.shutdown_grace_seconds
    assert options.drain_delay_seconds > 0
    assert pod_spec(manifests)["terminationGracePeriodSeconds"] > budget, "the kubelet's SIGKILL comes after"


def test_service_exposes_grpc_and_http_to_the_pods(manifests: list[Manifest]) -> None:
    service = one(manifests, "Service", "aspired")
    labels = one(manifests, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert ports["grpc"]["appProtocol"] == "grpc"
    assert ports["http"]["appProtocol"] == "http"
    c = container(manifests)
    for name, item in ports.items():
        assert port(c, item["targetPort"]) == item["port"] == port(c, name)


def test_autoscaler_and_disruption_budget_cover_the_pods(manifests: list[Manifest]) -> None:
    deployment = one(manifests, "Deployment")
    hpa = one(manifests, "HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "aspired"}
    assert 2 <= hpa["minReplicas"] < hpa["maxReplicas"]
    assert "replicas" not in deployment["spec"], "the autoscaler owns the replica count"
    pdb = one(manifests, "PodDisruptionBudget")["spec"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pdb["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["maxUnavailable"] < hpa["minReplicas"]


def test_resources_and_security_context(manifests: list[Manifest]) -> None:
    c = container(manifests)
    for bound in ("requests", "limits"):
        assert set(c["resources"][bound]) == {"cpu", "memory"}
    pod = pod_spec(manifests)["securityContext"]
    (user,) = [i for i in stages(dockerfile())[-1] if i.keyword == "USER"]
    assert pod["runAsNonRoot"] is True
    assert str(pod["runAsUser"]) == user.value.partition(":")[0], "the image's user"
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec(manifests)["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]], "a writable /tmp on a read-only root"


def test_s3_settings_are_the_documented_variables() -> None:
    manifests = kustomize(OVERLAYS["s3"])
    c = container(manifests)
    env = container_env(c, manifests)
    s3 = {
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_REGION",
        "S3_ENDPOINT",
        "S3_USE_HTTPS",
        "S3_VERIFY_SSL",
    }
    assert s3 <= env.keys()
    assert env.keys() - {"PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "LD_PRELOAD"} <= documented_variables()
    (secret_ref,) = [s["secretRef"]["name"] for s in c["envFrom"] if "secretRef" in s]
    secret = one(manifests, "Secret", secret_ref)
    assert set(secret["stringData"]) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    assert all(value.startswith("REPLACE_") for value in secret["stringData"].values()), "a template, no keys"
    # Remote versions are copied to local disk before loading: onto a volume, not the read-only root.
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec(manifests)["volumes"]}
    assert "emptyDir" in volumes[mounts[env["ASPIRED_CACHE_DIR"]]]


def test_the_custom_ops_overlay_of_the_readme_renders_and_parses(tmp_path: Path) -> None:
    # issue 13: deploy/README.md's overlay serving tensorflow-text models, applied on top of local-path.
    readme = (DEPLOY / "README.md").read_text()
    snippet = readme.split("# my-overlay/kustomization.yaml\n", 1)[1].split("```", 1)[0]
    overlay = tmp_path / "my-overlay"
    overlay.mkdir()
    base = "../deploy/k8s/overlays/local-path"
    assert base in snippet
    relative = os.path.relpath(OVERLAYS["local-path"], overlay)  # kustomize refuses absolute paths
    (overlay / "kustomization.yaml").write_text(snippet.replace(base, relative))
    manifests = kustomize(overlay)
    for manifest in manifests:
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
    c = container(manifests)
    assert c["image"] == "registry.example.com/ml/aspired:0.1.0-text"
    assert server_options(manifests, tmp_path).custom_op_modules == "tensorflow_text"
    assert "--build-arg EXTRA_PACKAGES='tensorflow-text>=2.20,<2.22'" in readme
    assert "text = [\"tensorflow-text>=2.20,<2.22\"]" in (DEPLOY.parent / "pyproject.toml").read_text()


# --- the server, started with the Deployment's arguments ---------------------------------------------------


@pytest.mark.e2e
def test_server_runs_with_the_deployments_arguments(tmp_path: Path) -> None:
    """The local-path overlay's container, outside Kubernetes: the rendered args through the entrypoint, the
    ConfigMap and the models volume as local directories (their paths rewritten), TF Serving's test models."""
    manifests = kustomize(OVERLAYS["local-path"])
    c = container(manifests)
    models = tmp_path / "models"
    models.mkdir()
    (models / "half_plus_two").symlink_to(testdata("saved_model_half_plus_two_cpu"))
    (models / "half_plus_three").symlink_to(testdata("saved_model_half_plus_three"))
    options = server_options(manifests, tmp_path)
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    config_text = str(one(manifests, "ConfigMap", "aspired-config")["data"]["models.config"])
    (config_dir / "models.config").write_text(config_text.replace('"/models/', f'"{models}/'))
    rewrite = {
        options.model_config_file: str(config_dir / "models.config"),
        options.monitoring_config_file: str(copied_to(options.monitoring_config_file)),
    }
    args = [
        arg.split("=", 1)[0] + "=" + rewrite.get(arg.split("=", 1)[1], arg.split("=", 1)[1])
        for arg in c["args"]
    ]

    server = EntrypointServer(args, container_env(c, manifests))
    with server:
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert httpx.get(server.rest_url + c[probe]["httpGet"]["path"], timeout=5).status_code == 200
        for name in ("half_plus_two", "half_plus_three"):
            status = httpx.get(f"{server.rest_url}/v1/models/{name}", timeout=5).json()
            assert [s["state"] for s in status["model_version_status"]] == ["AVAILABLE"]
        annotations = one(manifests, "Deployment")["spec"]["template"]["metadata"]["annotations"]
        metrics = httpx.get(server.rest_url + annotations["prometheus.io/path"], timeout=5)
        assert metrics.status_code == 200
        assert ":tensorflow:serving:" in metrics.text
        started = time.monotonic()
    # `with` sent SIGTERM: the drain (--drain_delay_seconds, then in-flight work) must end inside the pod's
    # grace period less the preStop sleep that precedes SIGTERM.
    pre_stop = c["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert time.monotonic() - started < pod_spec(manifests)["terminationGracePeriodSeconds"] - pre_stop
    assert server.proc is not None
    assert server.proc.returncode == 0
