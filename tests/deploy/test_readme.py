"""deploy/README.md stays followable: every path it names exists, every file of deploy/ is described there, and
the numbers it quotes for the shutdown budget are the manifests'."""

from __future__ import annotations

import re

from tests.deploy.helpers import DEPLOY, kustomize, one
from tests.paths import REPO

README = (DEPLOY / "README.md").read_text()


# Paths the reader creates: the demo model (`make demo-models`) and an optional compose .env file.
CREATED = ("examples/models/", "deploy/compose/.env")


def test_every_path_it_names_exists() -> None:
    for path in set(re.findall(r"(?<![\w/.])((?:deploy|examples|tests)/[\w./-]*[\w/])", README)):
        assert path.startswith(CREATED) or (REPO / path).exists(), path


def test_every_file_of_deploy_is_described() -> None:
    for path in DEPLOY.rglob("*"):
        relative = path.relative_to(REPO).as_posix()
        if path.is_file() and path.name != "README.md" and "__pycache__" not in relative:
            described = relative in README or relative.rsplit("/", 1)[0] + "/" in README
            assert described, f"{relative} is not mentioned in deploy/README.md"


def test_shutdown_numbers_are_the_manifests() -> None:
    pod = one(kustomize(DEPLOY / "k8s" / "overlays" / "s3"), "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert f"terminationGracePeriodSeconds: {pod['terminationGracePeriodSeconds']}" in README
    assert f"its `preStop` sleeps {container['lifecycle']['preStop']['sleep']['seconds']} s" in README
    for arg in container["args"]:
        if arg.startswith(("--drain_delay_seconds=", "--shutdown_grace_seconds=")):
            assert f"`{arg}`" in README, arg
