"""deploy/docker/entrypoint.sh: the environment becomes TF Serving's flags, extra arguments are appended, the
server's own parser accepts the result, and the real server starts from it (outside a container)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.deploy.helpers import (
    ENTRYPOINT,
    EntrypointServer,
    dockerfile,
    entrypoint_argv,
    image_env,
    parse_flags,
    run_tool,
    stages,
)
from tests.paths import testdata

IMAGE_DEFAULTS = [
    "--port=8500",
    "--rest_api_port=8501",
    "--model_name=model",
    "--model_base_path=/models/model",
]


def test_shellcheck_finds_nothing() -> None:
    result = run_tool(["shellcheck", "--shell=sh", "--severity=style", str(ENTRYPOINT)])
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize(
    ("env", "args", "expected"),
    [
        pytest.param(image_env(), [], IMAGE_DEFAULTS, id="image-defaults"),
        pytest.param({}, [], IMAGE_DEFAULTS, id="no-environment"),
        pytest.param(
            {**image_env(), "MODEL_NAME": "half_plus_two", "MODEL_BASE_PATH": "s3://models/"},
            ["--enable_batching", "--file_system_poll_wait_seconds=5"],
            [
                "--port=8500",
                "--rest_api_port=8501",
                "--model_name=half_plus_two",
                "--model_base_path=s3://models/half_plus_two",
                "--enable_batching",
                "--file_system_poll_wait_seconds=5",
            ],
            id="s3-base-and-extra-flags",
        ),
        pytest.param(
            {"MODEL_NAME": "with space", "MODEL_BASE_PATH": "/mnt/my models"},
            [],
            [
                "--port=8500",
                "--rest_api_port=8501",
                "--model_name=with space",
                "--model_base_path=/mnt/my models/with space",
            ],
            id="no-word-splitting",
        ),
    ],
)
def test_command_line_is_tf_serving_images(
    env: dict[str, str], args: list[str], expected: list[str], tmp_path: Path
) -> None:
    argv = entrypoint_argv(env, args, tmp_path)
    assert argv == expected
    parse_flags(argv, env)


def test_appended_flags_win(tmp_path: Path) -> None:
    args = ["--port=9000", "--rest_api_port=8080", "--model_name=flowers", "--model_base_path=/mnt/models"]
    options = parse_flags(entrypoint_argv(image_env(), args, tmp_path))
    assert (options.port, options.rest_api_port) == (9000, 8080)
    assert (options.model_name, options.model_base_path) == ("flowers", "/mnt/models")


@pytest.mark.e2e
def test_server_starts_from_the_entrypoint(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / "half_plus_two").symlink_to(testdata("saved_model_half_plus_two_cpu"))
    env = {**image_env(), "MODEL_NAME": "half_plus_two", "MODEL_BASE_PATH": str(models)}
    server = EntrypointServer([], env)
    with server:
        argv = server.command_line()
        assert Path(argv[1]).name == "aspired", argv  # exec'd: the server holds the container's pid
        assert f"--model_base_path={models}/half_plus_two" in argv

        status = httpx.get(f"{server.rest_url}/v1/models/half_plus_two", timeout=10).json()
        assert [s["state"] for s in status["model_version_status"]] == ["AVAILABLE"]
        body = {"instances": [1.0, 2.0, 5.0]}
        predict = httpx.post(f"{server.rest_url}/v1/models/half_plus_two:predict", json=body, timeout=10)
        assert predict.json() == {"predictions": [2.5, 3.0, 4.5]}

        # The image's HEALTHCHECK command, pointed at this server's REST port.
        (healthcheck,) = [i for i in stages(dockerfile())[-1] if i.keyword == "HEALTHCHECK"]
        command = healthcheck.exec_form()
        assert command is not None
        command = [
            sys.executable if a == "python" else a.replace(":8501/", f":{server.rest_port}/") for a in command
        ]
        assert subprocess.run(command, check=False, timeout=10).returncode == 0
    assert server.proc is not None
    assert server.proc.returncode == 0, "SIGTERM (what docker stop and the kubelet send) drains and exits 0"
