"""Options against the reference's flag table, and the config-file helpers with TF Serving's texts."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
from tensorflow_serving.config import model_server_config_pb2

from svc import config_files
from svc import options as opts
from svc.errors import Code, ServingError
from svc.options import Options
from tests import paths
from tests.paths import SHARED

# --- the reference's flag table ---------------------------------------------------------------------------

FLAG_ROW = re.compile(r"^\| `(?P<name>\w+)` \| (?P<type>\w+) \| (?P<default>[^|]+?) \|")

# Deliberate differences from TF Serving, each documented on the Options field.
DEVIATIONS: dict[str, Any] = {"enable_grpc_healthcheck_service": True}

EXTENSIONS = {
    "aspired_version_policy": ("string", "availability_preserving"),
    "num_initial_load_threads": ("int32", 4 * opts.N_CPU),
    "version_ready_marker": ("string", ""),
    "log_format": ("string", "json"),
    "log_level": ("string", "info"),
    "request_log_sample_rate": ("float", 1.0),
    "drain_delay_seconds": ("float", 0.0),
    "shutdown_grace_seconds": ("float", 30.0),
    "max_request_bytes": ("int64", 256 * 1024 * 1024),
    "request_read_timeout_seconds": ("float", 30.0),
    "frontend_workers": ("int32", 1),
    "custom_op_modules": ("string", ""),
    "custom_op_libraries": ("string", ""),
}

PYTHON_TYPES = {"int32": int, "int64": int, "float": float, "string": str, "bool": bool}


def reference_default(kind: str, text: str) -> Any:
    text = re.sub(r"\s*\(.*\)$", "", text.strip())  # "60000000 (1 min)"
    if text == "N_CPU":
        return opts.N_CPU
    if match := re.fullmatch(r"(\d+)\u00d7N_CPU", text):  # "4 x N_CPU" written with U+00D7
        return int(match[1]) * opts.N_CPU
    if kind == "bool":
        return {"true": True, "false": False}[text]
    if kind == "string":
        assert re.fullmatch(r'"[^"]*"', text), text
        return text[1:-1]
    return float(text) if kind == "float" else int(text)


def reference_flags() -> dict[str, tuple[str, Any]]:
    text = (SHARED / "tfserving-reference.md").read_text()
    section = text.split("## a. Command-line flags", 1)[1].split("\n## b.", 1)[0]
    rows = [FLAG_ROW.match(line) for line in section.splitlines()]
    flags = {m["name"]: (m["type"], reference_default(m["type"], m["default"])) for m in rows if m}
    assert len(flags) > 40, "the flag table of the reference was not found"
    return flags


REFERENCE = reference_flags()
FIELDS = {f.name: f for f in dataclasses.fields(Options)}


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_every_reference_flag_is_an_option_with_its_type_and_default(name: str) -> None:
    kind, default = REFERENCE[name]
    assert name in FIELDS, f"Options lacks --{name}"
    field = FIELDS[name]
    assert field.metadata["flag_type"] == kind
    assert field.type == PYTHON_TYPES[kind].__name__
    assert field.metadata["help"]
    assert getattr(Options(), name) == DEVIATIONS.get(name, default)


def test_options_has_only_reference_flags_and_the_documented_extensions() -> None:
    assert set(FIELDS) == set(REFERENCE) | set(EXTENSIONS)
    for name, (kind, default) in EXTENSIONS.items():
        assert FIELDS[name].metadata["flag_type"] == kind
        assert getattr(Options(), name) == default


def test_options_are_frozen_and_slotted() -> None:
    options = Options()
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.port = 1  # type: ignore[misc]
    assert not hasattr(options, "__dict__")


def test_ignored_flags_names_only_non_default_ignored_flags() -> None:
    assert opts.ignored_flags(Options()) == []
    options = Options(use_alts_credentials=True, enable_profiler=False, mixed_precision="bfloat16", port=1)
    assert opts.ignored_flags(options) == ["use_alts_credentials", "enable_profiler", "mixed_precision"]


# --- text-format files -------------------------------------------------------------------------------------


def test_parse_good_model_config_file() -> None:
    config = config_files.parse_text_config(
        paths.testdata("good_model_config.txt"), model_server_config_pb2.ModelServerConfig
    )
    models = config.model_config_list.config
    assert [(m.name, m.base_path, m.model_platform) for m in models] == [
        ("half_plus_two", "${TEST_HALF_PLUS_TWO_DIR}", "tensorflow"),
        ("half_plus_three", "${TEST_HALF_PLUS_THREE_DIR}", "tensorflow"),
    ]


def test_parse_text_config_accepts_text() -> None:
    text = "prometheus_config { enable: true }"
    assert config_files.parse_text_config(text, config_files.MonitoringConfig).prometheus_config.enable


@pytest.mark.parametrize(
    ("source", "code", "pattern"),
    [
        (
            paths.testdata("bad_model_config.txt"),
            Code.INVALID_ARGUMENT,
            (
                r"^Error parsing text-format tensorflow\.serving\.ModelServerConfig: 1:1 : .*improperly.*"
                r"\(file: .*bad_model_config\.txt\)$"
            ),
        ),
        (
            "model_config_list { config { nme: 'x' } }",
            Code.INVALID_ARGUMENT,
            r"^Error parsing text-format .*nme",
        ),
        (Path("/nonexistent/models.config"), Code.NOT_FOUND, r"^/nonexistent/models\.config; No such file"),
    ],
)
def test_parse_text_config_errors(source: Path | str, code: Code, pattern: str) -> None:
    with pytest.raises(ServingError) as caught:
        config_files.parse_text_config(source, model_server_config_pb2.ModelServerConfig)
    assert caught.value.code is code
    assert re.search(pattern, caught.value.message), caught.value.message


def test_model_server_config_single_model() -> None:
    config = opts.model_server_config(Options(model_name="m", model_base_path="/models/m"))
    expected = model_server_config_pb2.ModelServerConfig()
    model = expected.model_config_list.config.add(
        name="m", base_path="/models/m", model_platform="tensorflow"
    )
    assert model.name == "m"
    assert config == expected


def test_model_server_config_file_wins(tmp_path: Path) -> None:
    path = tmp_path / "models.config"
    path.write_text('model_config_list { config { name: "a" base_path: "/a" model_platform: "tensorflow" } }')
    config = opts.model_server_config(
        Options(model_name="m", model_base_path="/m", model_config_file=str(path))
    )
    assert [m.name for m in config.model_config_list.config] == ["a"]


# --- ModelServerConfig validation (ServerCore::ReloadConfig) -----------------------------------------------


def config_of(text: str) -> config_files.ModelServerConfig:
    return config_files.parse_text_config(text, model_server_config_pb2.ModelServerConfig)


def models(*entries: str) -> str:
    return "model_config_list { " + " ".join(f"config {{ {e} }}" for e in entries) + " }"


A = 'name: "a" base_path: "/m/a" model_platform: "tensorflow"'
B = 'name: "b" base_path: "s3://bucket/b" model_platform: "tensorflow"'
CUSTOM = 'custom_model_config { type_url: "type.googleapis.com/x.Y" }'


@pytest.mark.parametrize(
    ("text", "previous", "code", "message"),
    [
        (models(A, B), None, None, None),
        ("", None, None, None),
        (models('name: "f" base_path: "file:///m/f" model_platform: "tensorflow"'), None, None, None),
        (models('name: "t" base_path: "/m/t" model_type: TENSORFLOW'), None, None, None),
        (models(A, A), None, Code.INVALID_ARGUMENT, "Illegal to list model a multiple times in config list"),
        (
            models('name: "r" base_path: "models/r" model_platform: "tensorflow"'),
            None,
            Code.INVALID_ARGUMENT,
            "Expected model r to have an absolute path or URI; got base_path()=models/r",
        ),
        (
            models('name: "u" base_path: "s3+x://b/u" model_platform: "tensorflow"'),
            None,
            Code.INVALID_ARGUMENT,
            "Expected model u to have an absolute path or URI; got base_path()=s3+x://b/u",
        ),
        (
            models('name: "n" base_path: "/m/n"'),
            None,
            Code.INVALID_ARGUMENT,
            (
                "Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
                "ModelServerConfig::model_platform, model name is n"
            ),
        ),
        (
            models('name: "o" base_path: "/m/o" model_type: OTHER'),
            None,
            Code.INVALID_ARGUMENT,
            "ModelServerConfig::model_type choice 2 not supported.",
        ),
        (
            models('name: "t" base_path: "/m/t" model_type: TENSORFLOW model_platform: "tensorflow"'),
            None,
            Code.INVALID_ARGUMENT,
            (
                "Illegal setting both ModelServerConfig::model_type (deprecated) and "
                "ModelServerConfig::model_platform, model name is t"
            ),
        ),
        (
            models('name: "p" base_path: "/m/p" model_platform: "pytorch"'),
            None,
            Code.INVALID_ARGUMENT,
            "Model p requests unsupported platform pytorch",
        ),
        (
            models('name: "a" base_path: "/m/a" model_platform: "other"'),
            models(A),
            Code.INVALID_ARGUMENT,
            (
                "Illegal to change a model's platform. For model a platform was tensorflow and new platform "
                "requested is other"
            ),
        ),
        (CUSTOM, None, Code.UNIMPLEMENTED, "ModelServer does not yet support custom model config."),
        (
            CUSTOM,
            models(A),
            Code.FAILED_PRECONDITION,
            (
                "Cannot transition to requested config. It is only legal to transition from one ModelConfigList "
                "to another."
            ),
        ),
        (
            "",
            models(A),
            Code.FAILED_PRECONDITION,
            (
                "Cannot transition to requested config. It is only legal to transition from one ModelConfigList "
                "to another."
            ),
        ),
        (models(B), models(A), None, None),
        (models(A), "", None, None),  # the previous config was empty: this is the first one
    ],
)
def test_validate_model_server_config(
    text: str, previous: str | None, code: Code | None, message: str | None
) -> None:
    config = config_of(text)
    before = None if previous is None else config_of(previous)
    if code is None:
        config_files.validate_model_server_config(config, before)
        return
    with pytest.raises(ServingError) as caught:
        config_files.validate_model_server_config(config, before)
    assert (caught.value.code, caught.value.message) == (code, message)


@pytest.mark.parametrize("text", ["", CUSTOM])
def test_reload_request_accepts_only_a_model_config_list(text: str) -> None:
    with pytest.raises(ServingError) as caught:
        config_files.validate_model_server_config(config_of(text), config_of(models(A)), reload_request=True)
    assert caught.value.code is Code.INVALID_ARGUMENT
    assert caught.value.message == (
        "ServerModelConfig type not supported by HandleReloadConfigRequest. "
        "Only ModelConfigList is currently supported"
    )
    config_files.validate_model_server_config(config_of(models(A)), config_of(models(A)), reload_request=True)


# --- batching, monitoring, SSL, channel arguments --------------------------------------------------------


def test_batching_off_is_none() -> None:
    assert opts.batching_parameters(Options()) is None


def test_batching_defaults_without_a_file() -> None:
    params = opts.batching_parameters(Options(enable_batching=True))
    assert params is not None
    assert params.thread_pool_name.value == "model_server_batch_threads"
    assert params.max_batch_size.value == 1000
    assert params.batch_timeout_micros.value == 0
    assert params.max_enqueued_batches.value == 10
    assert params.num_batch_threads.value == opts.N_CPU
    assert params.enable_large_batch_splitting.value is False
    assert params.max_execution_batch_size.value == 1000
    assert list(params.allowed_batch_sizes) == []
    assert params.pad_variable_length_inputs is False


def test_batching_file_values_and_defaults() -> None:
    path = paths.testdata("batching_config.txt")
    params = opts.batching_parameters(Options(enable_batching=True, batching_parameters_file=str(path)))
    assert params is not None
    assert (params.max_batch_size.value, params.batch_timeout_micros.value) == (128, 0)
    assert (params.max_enqueued_batches.value, params.num_batch_threads.value) == (1_000_000, 8)
    assert params.thread_pool_name.value == "batch_threads"
    assert params.max_execution_batch_size.value == 128


def test_batching_file_scalars(tmp_path: Path) -> None:
    path = tmp_path / "batching.txt"
    path.write_text(
        "max_batch_size { value: 64 } allowed_batch_sizes: 8 allowed_batch_sizes: 64\n"
        "pad_variable_length_inputs: true"
    )
    params = opts.batching_parameters(Options(enable_batching=True, batching_parameters_file=str(path)))
    assert params is not None
    assert list(params.allowed_batch_sizes) == [8, 64]
    assert params.pad_variable_length_inputs is True


def test_batching_file_error() -> None:
    bad = Options(enable_batching=True, batching_parameters_file=str(paths.testdata("bad_model_config.txt")))
    with pytest.raises(
        ServingError, match=r"^Error parsing text-format aspired\.config\.BatchingParameters: "
    ):
        opts.batching_parameters(bad)


def test_monitoring_config() -> None:
    config = opts.monitoring_config(
        Options(monitoring_config_file=str(paths.testdata("monitoring_config.txt")))
    )
    assert config.prometheus_config.enable
    assert config.prometheus_config.path == "/monitoring/prometheus/metrics"
    default = opts.monitoring_config(Options())
    assert not default.prometheus_config.enable
    assert default.prometheus_config.path == opts.PROMETHEUS_PATH


def test_ssl_config(tmp_path: Path) -> None:
    assert opts.ssl_config(Options()) is None
    path = tmp_path / "ssl.txt"
    path.write_text('server_key: "KEY" server_cert: "CERT" custom_ca: "CA" client_verify: true')
    config = opts.ssl_config(Options(ssl_config_file=str(path)))
    assert config is not None
    assert (config.server_key, config.server_cert, config.custom_ca, config.client_verify) == (
        "KEY",
        "CERT",
        "CA",
        True,
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", []),
        ("grpc.max_connection_age_ms=2000", [("grpc.max_connection_age_ms", 2000)]),
        ("a=x,b=-3,c=99999999999", [("a", "x"), ("b", -3), ("c", "99999999999")]),
    ],
)
def test_grpc_channel_arguments(text: str, expected: list[tuple[str, int | str]]) -> None:
    assert opts.grpc_channel_arguments(Options(grpc_channel_arguments=text)) == expected


def test_grpc_channel_argument_without_equals() -> None:
    with pytest.raises(ServingError, match="not of the form key=value"):
        opts.grpc_channel_arguments(Options(grpc_channel_arguments="a=1,b"))


# --- startup checks (Server::BuildAndStart) ---------------------------------------------------------------

BASE = {"model_base_path": "/models/m"}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {**BASE, "port": 0},
            "At least one of server_options.grpc_port or server_options.grpc_socket_path must be set.",
        ),
        (
            {**BASE, "use_alts_credentials": True, "ssl_config_file": "/ssl"},
            "Either use_alts_credentials must be false or ssl_config_file must be empty.",
        ),
        ({}, "Both server_options.model_base_path and server_options.model_config_file are empty!"),
        (
            {**BASE, "batching_parameters_file": "/b"},
            "server_options.batching_parameters_file is set without setting server_options.enable_batching to true.",
        ),
        (
            {
                **BASE,
                "tensorflow_session_parallelism": 1,
                "tensorflow_intra_op_parallelism": 1,
                "tensorflow_inter_op_parallelism": 1,
            },
            (
                "Either configure server_options.tensorflow_session_parallelism or "
                "(server_options.tensorflow_intra_op_parallelism, server_options.tensorflow_inter_op_parallelism) "
                "separately. You cannot configure all."
            ),
        ),
        ({**BASE, "log_format": "xml"}, "--log_format must be one of json, console; got 'xml'"),
        (
            {**BASE, "aspired_version_policy": "eager"},
            "--aspired_version_policy must be one of availability_preserving, resource_preserving; got 'eager'",
        ),
        ({**BASE, "request_log_sample_rate": 1.5}, "--request_log_sample_rate must be in [0, 1]; got 1.5"),
        ({**BASE, "max_request_bytes": 0}, "--max_request_bytes must be positive; got 0"),
        ({**BASE, "frontend_workers": 0}, "--frontend_workers must be at least 1; got 0"),
    ],
)
def test_validate_options_errors(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ServingError) as caught:
        opts.validate_options(Options(**values))
    assert (caught.value.code, caught.value.message) == (Code.INVALID_ARGUMENT, message)


def test_validate_options_accepts_socket_only_and_good_files() -> None:
    opts.validate_options(
        Options(
            port=0,
            grpc_socket_path="/tmp/s",
            model_base_path="/models/m",
            enable_batching=True,
            batching_parameters_file=str(paths.testdata("batching_config.txt")),
            rest_api_port=8501,
            monitoring_config_file=str(paths.testdata("monitoring_config.txt")),
        )
    )


def test_monitoring_file_is_read_only_with_rest() -> None:
    broken = str(paths.testdata("bad_model_config.txt"))
    opts.validate_options(Options(model_base_path="/m", monitoring_config_file=broken))
    with pytest.raises(ServingError, match="MonitoringConfig"):
        opts.validate_options(
            Options(model_base_path="/m", monitoring_config_file=broken, rest_api_port=8501)
        )
