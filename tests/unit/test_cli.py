"""The command line: TF's flag syntax, usage/version output and exit codes, environment defaults, startup
checks (`main.cc`, `command_line_flags.cc`, `Server::BuildAndStart`)."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import svc
from svc import cli
from svc.options import Options
from tests import paths

NO_ENV: dict[str, str] = {}
FIELDS = {f.name: f for f in dataclasses.fields(Options)}


def parse(*argv: str, env: dict[str, str] | None = None) -> Options:
    return cli.parse_args(list(argv), NO_ENV if env is None else env)


# --- values of every type ----------------------------------------------------------------------------------

SAMPLE_VALUES: dict[str, tuple[str, Any]] = {
    "int32": ("-7", -7),
    "int64": ("9000000000", 9_000_000_000),
    "float": ("0.25", 0.25),
    "string": ("some,thing=x", "some,thing=x"),
}


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_every_flag_parses_its_type(name: str) -> None:
    kind = FIELDS[name].metadata["flag_type"]
    if kind == "bool":
        assert getattr(parse(f"--{name}=true"), name) is True
        assert getattr(parse(f"--{name}=false"), name) is False
        return
    text, value = SAMPLE_VALUES[kind]
    assert getattr(parse(f"--{name}={text}"), name) == value


def test_defaults_without_arguments_are_options_defaults() -> None:
    assert parse() == Options()


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--enable_batching"], True),
        (["--enable_batching=true"], True),
        (["--enable_batching=false"], False),
        (["--enable_batching", "--enable_batching=false"], False),  # the last one wins
    ],
)
def test_bool_forms(argv: list[str], expected: bool) -> None:
    assert parse(*argv).enable_batching is expected


def test_bool_default_true_can_be_turned_off() -> None:
    assert parse("--enable_model_warmup=false").enable_model_warmup is False


@pytest.mark.parametrize(
    "arg",
    [
        "--enable_batching=1",
        "--enable_batching=True",
        "--enable_batching=yes",
        "--enable_batching=",
        "--enable_batchingX",  # TF matches bool flags by prefix: a bad value, not an unknown argument
        "--port=abc",
        "--port=",
        "--port=1.5",
        "--port=0x10",
        "--port=5 ",
        "--port=2147483648",  # beyond int32
        "--load_retry_interval_micros=9223372036854775808",  # beyond int64
        "--per_process_gpu_memory_fraction=half",
        "--per_process_gpu_memory_fraction=1e999",
        "--per_process_gpu_memory_fraction=0.5x",
    ],
)
def test_bad_values_are_usage_errors(arg: str) -> None:
    with pytest.raises(cli.UsageError) as caught:
        parse(arg)
    assert caught.value.errors
    assert caught.value.errors[0].startswith("Couldn't interpret value ")


@pytest.mark.parametrize(
    ("arg", "name", "value"),
    [
        ("--port=+12", "port", 12),
        ("--port= 12", "port", 12),  # sscanf skips leading blanks
        ("--port=-1", "port", -1),
        ("--load_retry_interval_micros=-1", "load_retry_interval_micros", -1),
        ("--per_process_gpu_memory_fraction=.5", "per_process_gpu_memory_fraction", 0.5),
        ("--per_process_gpu_memory_fraction=1e-1", "per_process_gpu_memory_fraction", 0.1),
        ("--model_name=", "model_name", ""),
        ("--model_base_path=s3://b/m=1", "model_base_path", "s3://b/m=1"),
    ],
)
def test_edge_values(arg: str, name: str, value: Any) -> None:
    assert getattr(parse(arg), name) == value


@pytest.mark.parametrize(
    ("argv", "unknown"),
    [
        (["--port", "9000"], ["--port", "9000"]),  # `--flag value` is not a flag
        (["-port=9000"], ["-port=9000"]),
        (["--no_such_flag=1", "model"], ["--no_such_flag=1", "model"]),
        (["--enable_batching", "true"], ["true"]),
        (["--model_config_file_poll_wait_seconds_x=1"], ["--model_config_file_poll_wait_seconds_x=1"]),
    ],
)
def test_unknown_arguments_are_kept_aside(argv: list[str], unknown: list[str]) -> None:
    options, rest = cli.parse_command_line(argv, NO_ENV)
    assert rest == unknown
    assert options.port == 8500


def test_help_only_as_first_unknown_argument() -> None:
    with pytest.raises(cli.UsageError):
        parse("--port=1", "--help")
    _, rest = cli.parse_command_line(["--foo", "--help"], NO_ENV)
    assert rest == ["--foo", "--help"]


# --- environment defaults (TF Serving's Docker image) ------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "argv", "name", "base_path"),
    [
        ({}, [], "default", ""),
        ({"MODEL_NAME": "model", "MODEL_BASE_PATH": "/models"}, [], "model", "/models/model"),
        ({"MODEL_BASE_PATH": "/models/"}, [], "default", "/models/default"),
        ({"MODEL_BASE_PATH": "s3://bucket/models"}, ["--model_name=m"], "m", "s3://bucket/models/m"),
        ({"MODEL_NAME": "model", "MODEL_BASE_PATH": "/models"}, ["--model_name=x"], "x", "/models/x"),
        ({"MODEL_NAME": "model", "MODEL_BASE_PATH": "/models"}, ["--model_base_path=/p"], "model", "/p"),
        ({"MODEL_NAME": ""}, [], "default", ""),
    ],
)
def test_environment_defaults(env: dict[str, str], argv: list[str], name: str, base_path: str) -> None:
    options = parse(*argv, env=env)
    assert (options.model_name, options.model_base_path) == (name, base_path)


# --- main: output and exit status --------------------------------------------------------------------------


class FakeRun:
    """The supervisor's `run`, recording what it was given."""

    def __init__(self, status: int = 0) -> None:
        self.status = status
        self.calls: list[Options] = []

    def __call__(self, options: Options) -> int:
        self.calls.append(options)
        return self.status


def test_usage_lists_every_flag_with_type_and_default() -> None:
    usage = cli.usage_text()
    assert usage.startswith("usage: aspired\nFlags:\n")
    lines = usage.splitlines()[2:]
    assert len(lines) == len(FIELDS)
    for line, field in zip(lines, dataclasses.fields(Options), strict=True):
        flag_string, kind, help_text = line.lstrip("\t").split("\t")
        assert flag_string.startswith(f"--{field.name}=")
        assert kind == field.metadata["flag_type"]
        assert help_text == field.metadata["help"]
    assert "\t--port=8500 " in usage
    assert '\t--saved_model_tags="serve" ' in usage
    assert "\t--enable_model_warmup=true" in usage
    assert "\t--per_process_gpu_memory_fraction=0.000000" in usage


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["--port=x"], ["--model_base_path=/m", "--help"], ["--enable_batching=no", "--version"]],
)
def test_usage_exit(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    run = FakeRun()
    assert cli.main(argv, run=run) == 255
    out = capsys.readouterr().out
    assert out == cli.usage_text()
    assert run.calls == []


def test_bad_value_is_reported_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--port=abc"], run=FakeRun()) == 255
    assert capsys.readouterr().err == "Couldn't interpret value abc for flag port.\n"


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    run = FakeRun()
    assert cli.main(["--version", "--unknown"], run=run) == 0
    tensorflow = importlib.metadata.version("tensorflow")
    assert capsys.readouterr().out == (
        f"TensorFlow ModelServer: {svc.__version__}\nTensorFlow Library: {tensorflow}\n"
    )
    assert run.calls == []


def test_version_subprocess_does_not_import_tensorflow() -> None:
    code = "import sys, svc.cli; sys.exit('tensorflow' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=paths.REPO, check=False).returncode == 0
    result = subprocess.run(
        [sys.executable, "-m", "svc", "--version"],
        cwd=paths.REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0
    assert result.stdout.startswith(f"TensorFlow ModelServer: {svc.__version__}\nTensorFlow Library: ")


def test_help_subprocess_exit_status() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "svc", "--help"], cwd=paths.REPO, capture_output=True, text=True, check=False
    )
    assert result.returncode == 255
    assert result.stdout == cli.usage_text()


def test_unknown_argument_is_reported_and_the_server_runs(capsys: pytest.CaptureFixture[str]) -> None:
    run = FakeRun(status=3)
    assert cli.main(["--model_base_path=/m", "--port", "9000"], run=run) == 3
    assert capsys.readouterr().out == f"unknown argument: --port\n{cli.usage_text()}"
    assert [options.port for options in run.calls] == [8500]


def test_valid_arguments_run_the_supervisor(capsys: pytest.CaptureFixture[str]) -> None:
    run = FakeRun()
    assert cli.main(["--model_name=m", "--model_base_path=/models/m", "--rest_api_port=8501"], run=run) == 0
    assert capsys.readouterr().out == ""
    assert run.calls == [Options(model_name="m", model_base_path="/models/m", rest_api_port=8501)]


# --- startup checks ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (
            ["--model_base_path=/m", "--port=0"],
            (
                "INVALID_ARGUMENT: At least one of server_options.grpc_port or server_options.grpc_socket_path "
                "must be set."
            ),
        ),
        (
            ["--model_base_path=/m", "--use_alts_credentials", "--ssl_config_file=/ssl"],
            "INVALID_ARGUMENT: Either use_alts_credentials must be false or ssl_config_file must be empty.",
        ),
        (
            [],
            "INVALID_ARGUMENT: Both server_options.model_base_path and server_options.model_config_file are empty!",
        ),
        (
            ["--model_base_path=/m", "--batching_parameters_file=/b"],
            (
                "INVALID_ARGUMENT: server_options.batching_parameters_file is set without setting "
                "server_options.enable_batching to true."
            ),
        ),
        (
            [
                "--model_base_path=/m",
                "--tensorflow_session_parallelism=2",
                "--tensorflow_intra_op_parallelism=2",
                "--tensorflow_inter_op_parallelism=2",
            ],
            (
                "INVALID_ARGUMENT: Either configure server_options.tensorflow_session_parallelism or "
                "(server_options.tensorflow_intra_op_parallelism, server_options.tensorflow_inter_op_parallelism) "
                "separately. You cannot configure all."
            ),
        ),
        (
            ["--model_base_path=models/m"],
            "INVALID_ARGUMENT: Expected model default to have an absolute path or URI; got base_path()=models/m",
        ),
        (
            ["--model_config_file=/nonexistent.config"],
            "NOT_FOUND: /nonexistent.config; No such file or directory",
        ),
    ],
)
def test_startup_errors(argv: list[str], error: str, capsys: pytest.CaptureFixture[str]) -> None:
    run = FakeRun()
    assert cli.main(argv, run=run) == 255
    assert capsys.readouterr().out == f"Failed to start server. Error: {error}\n"
    assert run.calls == []


def test_broken_model_config_file(capsys: pytest.CaptureFixture[str]) -> None:
    path = paths.testdata("bad_model_config.txt")
    assert cli.main([f"--model_config_file={path}"], run=FakeRun()) == 255
    out = capsys.readouterr().out
    assert out.startswith("Failed to start server. Error: INVALID_ARGUMENT: ")
    assert "Error parsing text-format tensorflow.serving.ModelServerConfig" in out


def test_good_model_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = paths.testdata("good_model_config.txt").read_text()
    text = text.replace("${TEST_HALF_PLUS_TWO_DIR}", str(paths.testdata("saved_model_half_plus_two_cpu")))
    text = text.replace("${TEST_HALF_PLUS_THREE_DIR}", str(paths.testdata("saved_model_half_plus_three")))
    config = tmp_path / "models.config"
    config.write_text(text)
    run = FakeRun()
    assert cli.main([f"--model_config_file={config}"], run=run) == 0
    assert capsys.readouterr().out == ""
    assert run.calls[0].model_config_file == str(config)


def test_good_model_config_template_is_rejected_for_its_relative_paths(
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = paths.testdata("good_model_config.txt")
    assert cli.main([f"--model_config_file={path}"], run=FakeRun()) == 255
    assert "Expected model half_plus_two to have an absolute path or URI" in capsys.readouterr().out
