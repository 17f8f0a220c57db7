"""deploy/docker/Dockerfile: hadolint, then the rules this project holds the image to, then its build context
(the allowlist of Dockerfile.dockerignore) built into a wheel the way the image's first stage builds it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.deploy.helpers import (
    DEPLOY,
    DOCKERFILE,
    ENTRYPOINT,
    Instruction,
    copied_to,
    dockerfile,
    entrypoint_target,
    global_args,
    image_env,
    run_tool,
    stages,
)
from tests.paths import REPO

FINAL = stages(dockerfile())[-1]


def final(keyword: str) -> list[Instruction]:
    return [i for i in FINAL if i.keyword == keyword]


def test_hadolint_finds_nothing() -> None:
    result = run_tool(["hadolint", "--no-color", "--failure-threshold=info", str(DOCKERFILE)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_base_image_is_pinned_to_a_full_version() -> None:
    instructions = dockerfile()
    args = global_args(instructions)
    names: set[str] = set()
    for instruction in (i for i in instructions if i.keyword == "FROM"):
        image, *rest = instruction.value.split()
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
        if image not in names:
            repository, _, tag = image.partition("@")[0].rpartition(":")
            assert repository, f"line {instruction.line}: {image} has no tag"
            assert "@sha256:" in image or re.search(r"\d+\.\d+\.\d+", tag), f"{image}: pin a full version"
            assert tag != "latest"
        if rest:
            assert rest[0].upper() == "AS"
            names.add(rest[1])


def test_runs_as_a_numeric_non_root_user_that_exists() -> None:
    (user,) = final("USER")
    uid, _, gid = user.value.partition(":")
    assert uid.isdigit(), "USER must be numeric (so runAsNonRoot can check it)"
    assert int(uid) != 0
    created = " ".join(i.value for i in final("RUN"))
    assert f"--uid {uid}" in created
    assert f"--gid {gid or uid}" in created


def test_healthcheck_asks_livez_on_the_rest_port() -> None:
    (healthcheck,) = final("HEALTHCHECK")
    argv = healthcheck.exec_form()
    assert argv is not None, "HEALTHCHECK CMD must be exec form"
    assert "http://127.0.0.1:8501/livez" in " ".join(argv)
    assert "--start-period=" in healthcheck.value  # the ports open only after the initial load
    assert "8501" in " ".join(i.value for i in final("EXPOSE")).split()


def test_no_add_of_urls_or_archives() -> None:
    assert not [i for i in dockerfile() if i.keyword == "ADD"], "use COPY (and RUN curl for downloads)"


def test_apt_installs_are_minimal_and_leave_no_lists() -> None:
    runs = [i for i in dockerfile() if i.keyword == "RUN" and "apt-get install" in i.value]
    assert runs
    for run in runs:
        assert "apt-get update" in run.value, "update and install in one layer"
        assert "--no-install-recommends" in run.value
        assert "rm -rf /var/lib/apt/lists/*" in run.value


def test_pip_keeps_no_cache() -> None:
    for run in (
        i for i in dockerfile() if i.keyword == "RUN" and re.search(r"\bpip (install|wheel)\b", i.value)
    ):
        assert "--no-cache-dir" in run.value


def test_entrypoint_is_exec_form_through_tini_to_the_project_script() -> None:
    (entrypoint,) = final("ENTRYPOINT")
    argv = entrypoint.exec_form()
    assert argv is not None, "ENTRYPOINT must be exec form: signals reach the process"
    assert argv[:2] == ["/usr/bin/tini", "--"]
    assert copied_to(entrypoint_target()) == ENTRYPOINT
    assert not final("CMD"), "no default CMD: arguments are only the user's extra flags, as in TF Serving"


def test_tf_serving_conventions() -> None:
    env = image_env()
    assert env["MODEL_NAME"]
    assert env["MODEL_BASE_PATH"] == "/models"
    assert set(" ".join(i.value for i in final("EXPOSE")).split()) == {"8500", "8501"}


def test_gpu_variant_is_a_build_argument() -> None:
    args = global_args(dockerfile())
    assert args["TENSORFLOW"] == "tensorflow"
    installs = [i.value for i in dockerfile() if i.keyword == "RUN" and "${TENSORFLOW}" in i.value]
    assert len(installs) == 2, "resolved in the build stage and installed in the final one"
    assert "tensorflow[and-cuda]" in DOCKERFILE.read_text()  # the documented GPU build
    # The seeds' GPU pitfall: CUDA stub libraries ahead of the driver's on LD_LIBRARY_PATH.
    assert "LD_LIBRARY_PATH" not in image_env()


def test_extra_packages_is_a_build_argument_of_both_stages() -> None:
    # issue 13: packages whose ops models need (tensorflow-text, ...) are resolved with TensorFlow and installed.
    assert global_args(dockerfile())["EXTRA_PACKAGES"] == "\"\""  # empty: nothing extra by default
    for stage in stages(dockerfile()):
        assert any(i.keyword == "ARG" and i.value == "EXTRA_PACKAGES" for i in stage)
        (pip,) = [i.value for i in stage if i.keyword == "RUN" and "${TENSORFLOW}" in i.value]
        assert pip.rstrip().endswith("${EXTRA_PACKAGES}")
        assert "set -f" in pip  # no globbing of `package[extra]`


def test_jemalloc_is_preloaded_from_the_path_the_image_links() -> None:
    # deploy/README.md ("Memory allocator") records the measurement behind this choice.
    preload = image_env()["LD_PRELOAD"]
    assert preload == "/usr/local/lib/libjemalloc.so.2"
    runs = [i.value for i in dockerfile() if i.keyword == "RUN"]
    assert any("libjemalloc2" in r and f"ln -s /usr/lib/*-linux-gnu/libjemalloc.so.2 {preload}" in r for r in runs)
    assert "Memory allocator" in (DEPLOY / "README.md").read_text()


# --- the build context --------------------------------------------------------------------------------------


def dockerignore_patterns() -> list[tuple[bool, str]]:
    """(exclude?, pattern) of deploy/docker/Dockerfile.dockerignore, in order."""
    patterns = []
    for line in (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            patterns.append((not line.startswith("!"), line.removeprefix("!")))
    return patterns


def _regex(pattern: str) -> str:
    """A .dockerignore pattern (Go's filepath.Match plus `**`) as a regular expression."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        else:
            out += {"*": "[^/]*", "?": "[^/]"}.get(pattern[i], re.escape(pattern[i]))
            i += 1
    return out


def _matches(pattern: str, path: str) -> bool:
    """Docker's rule: a pattern that matches a directory matches everything below it."""
    parts = path.split("/")
    return any(re.fullmatch(_regex(pattern), "/".join(parts[: i + 1])) for i in range(len(parts)))


def in_context(path: str) -> bool:
    included = True
    for exclude, pattern in dockerignore_patterns():
        if _matches(pattern, path):
            included = not exclude
    return included


def test_dockerignore_sends_sources_and_keeps_the_rest_out() -> None:
    for path in ("pyproject.toml", "svc/cli.py", "svc/_proto/__init__.py", "deploy/docker/entrypoint.sh"):
        assert in_context(path), path
    for path in (".venv/bin/python", ".git/HEAD", "tests/paths.py", "examples/models/x/1/saved_model.pb",
                 "svc/__pycache__/cli.cpython-311.pyc", "deploy/k8s/base/deployment.yaml"):  # fmt: skip
        assert not in_context(path), path


def test_every_copied_file_exists_and_is_in_the_context() -> None:
    for instruction in dockerfile():
        if instruction.keyword == "COPY" and not instruction.value.startswith("--from"):
            source = instruction.value.split()[0]
            if source != ".":
                assert (REPO / source).is_file(), source
                assert in_context(source), f"{source} is excluded by Dockerfile.dockerignore"


def test_the_context_builds_the_package(tmp_path: Path) -> None:
    """The first stage's `pip wheel .` on exactly the files the context sends (without resolving the
    dependencies, which needs the network)."""
    context = tmp_path / "context"
    for directory, subdirectories, files in os.walk(REPO):
        here = Path(directory).relative_to(REPO).as_posix().removeprefix(".")
        subdirectories[:] = [d for d in subdirectories if d not in (".git", ".venv")]
        for name in files:
            relative = f"{here}/{name}".lstrip("/")
            if in_context(relative):
                (context / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / relative, context / relative)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(tmp_path / "wheels"), str(context)],
        check=False, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (wheel,) = (tmp_path / "wheels").glob("aspired-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "svc/cli.py" in names
    assert "svc/__main__.py" in names
    assert any(name.startswith("svc/_proto/") for name in names)
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    assert "aspired = svc.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
