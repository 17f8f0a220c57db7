"""deploy/kong/kong.yaml: a well-formed Kong 3 declarative config whose upstreams are the Service that deploy/k8s
renders (name, namespace, port and protocol), whose REST routes match exactly the URLs of the models in the
models.config (and not a model whose name merely starts the same), with key-auth and rate limiting on all."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from svc.config_files import ModelServerConfig, parse_text_config
from tests.deploy.helpers import DEPLOY, kustomize, one

KONG = DEPLOY / "kong" / "kong.yaml"
RATE_LIMITS = {"second", "minute", "hour", "day", "month", "year"}
# Fields of the Kong 3 entities the config uses (services, routes, plugins, consumers, credentials).
SERVICE_FIELDS = {
    "name",
    "url",
    "connect_timeout",
    "read_timeout",
    "write_timeout",
    "retries",
    "routes",
    "plugins",
}
ROUTE_FIELDS = {"name", "protocols", "methods", "paths", "hosts", "strip_path", "preserve_host", "plugins"}


def config() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(KONG.read_text())
    return document


def services() -> list[dict[str, Any]]:
    return list(config()["services"])


def rest_routes() -> list[dict[str, Any]]:
    return [r for s in services() for r in s["routes"] if set(r["protocols"]) <= {"http", "https"}]


def route_regex(route: dict[str, Any]) -> re.Pattern[str]:
    (path,) = route["paths"]
    assert path.startswith("~/"), "Kong 3 marks regex paths with ~"
    return re.compile(path[1:])


def model_names() -> list[str]:
    data = one(kustomize(DEPLOY / "k8s" / "overlays" / "s3"), "ConfigMap", "aspired-config")["data"]
    return [
        m.name for m in parse_text_config(data["models.config"], ModelServerConfig).model_config_list.config
    ]


def test_well_formed_declarative_config() -> None:
    document = config()
    assert document["_format_version"] == "3.0"
    assert set(document) <= {"_format_version", "services", "plugins", "consumers"}
    for names in ([s["name"] for s in services()], [r["name"] for s in services() for r in s["routes"]]):
        assert len(names) == len(set(names)), f"duplicate names in {names}"
    for item in services():
        assert set(item) <= SERVICE_FIELDS, item["name"]
        for route in item["routes"]:
            assert set(route) <= ROUTE_FIELDS, route["name"]
            assert route["strip_path"] is False, "the server needs the whole /v1/models/... path"
            for path in route["paths"]:
                re.compile(path.removeprefix("~"))


def test_upstreams_are_the_rendered_service() -> None:
    manifests = kustomize(DEPLOY / "k8s" / "overlays" / "s3")
    service = one(manifests, "Service", "aspired")
    ports = {p["port"]: p for p in service["spec"]["ports"]}
    expected_host = f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc.cluster.local"
    for item in services():
        url = urlsplit(item["url"])
        assert url.hostname == expected_host, item["name"]
        assert url.port in ports, f"{item['name']}: no such Service port"
        assert url.scheme == ports[url.port]["appProtocol"], f"{item['name']}: the port speaks {url.scheme}"


@pytest.mark.parametrize("model", model_names())
def test_every_model_has_a_rest_route_that_matches_only_it(model: str) -> None:
    urls = [
        f"/v1/models/{model}",
        f"/v1/models/{model}:predict",
        f"/v1/models/{model}/metadata",
        f"/v1/models/{model}/versions/123:classify",
        f"/v1/models/{model}/labels/stable:regress",
    ]
    (route,) = [r for r in rest_routes() if route_regex(r).match(urls[1])]
    regex = route_regex(route)
    assert all(regex.match(url) for url in urls)
    assert not regex.match(f"/v1/models/{model}_tf2:predict"), "a longer model name is another model"


def test_every_rest_route_names_a_served_model() -> None:
    for route in rest_routes():
        assert any(route_regex(route).match(f"/v1/models/{m}:predict") for m in model_names()), route["name"]


def test_grpc_route_covers_the_serving_apis() -> None:
    (route,) = [r for s in services() for r in s["routes"] if "grpc" in r["protocols"]]
    assert set(route["paths"]) == {
        "/tensorflow.serving.PredictionService/",
        "/tensorflow.serving.ModelService/",
    }


def test_key_auth_everywhere_and_every_service_rate_limited() -> None:
    (key_auth,) = [p for p in config()["plugins"] if p["name"] == "key-auth"]
    assert key_auth["config"]["hide_credentials"] is True, "the key is not passed on to the model server"
    for item in services():
        (limit,) = [p for p in item["plugins"] if p["name"] == "rate-limiting"]
        assert set(limit["config"]) - {"policy"} <= RATE_LIMITS
        assert set(limit["config"]) & RATE_LIMITS
        assert limit["config"]["policy"] == "local"
    for consumer in config()["consumers"]:
        assert all(c["key"].startswith("REPLACE_") for c in consumer["keyauth_credentials"]), "a template"
