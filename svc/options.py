"""Server options (`tensorflow_model_server`'s flags) and the config files they name.

Mirrors `model_servers/main.cc` (the flags) and `server.h` / `server.cc` (`Server::Options` defaults and the
checks of `Server::BuildAndStart`). Everything here is pure: functions read the files an option names (parsed
and validated by `svc/config_files.py`) and return protobuf messages or raise `ServingError` with TF Serving's
message texts. Nothing imports TensorFlow.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Final, TypeVar

from tensorflow_serving.config import model_server_config_pb2

from svc._proto.aspired import config_pb2
from svc.config_files import (
    TENSORFLOW_PLATFORM,
    BatchingParameters,
    ModelServerConfig,
    MonitoringConfig,
    SSLConfig,
    parse_text_config,
    read_text_file,
    validate_model_server_config,
)
from svc.errors import invalid_argument

N_CPU: Final = os.cpu_count() or 1
PROMETHEUS_PATH: Final = "/monitoring/prometheus/metrics"
ASPIRED_VERSION_POLICIES: Final = ("availability_preserving", "resource_preserving")
LOG_FORMATS: Final = ("json", "console")
LOG_LEVELS: Final = ("debug", "info", "warning", "error", "critical")

_T = TypeVar("_T")


def _flag(default: _T, kind: str, help: str) -> _T:
    """A field that is also a command-line flag: `kind` is TF's flag type (int32, int64, float, string, bool).
    A TF flag this server does not act on is listed in IGNORED_FLAGS, with the reason."""
    metadata = {"flag_type": kind, "help": help}
    return field(default=default, metadata=metadata)


@dataclass(frozen=True, slots=True)
class Options:
    """One field per `tensorflow_model_server` flag (same name, type and default; flags whose field says
    in IGNORED_FLAGS are accepted and logged, not acted on), then this server's own flags.

    Deliberate difference: `enable_grpc_healthcheck_service` defaults to true (TF Serving: false), so
    orchestrators' gRPC health probes work without extra flags; `--enable_grpc_healthcheck_service=false`
    restores TF's behaviour.
    """

    port: int = _flag(8500, "int32", "gRPC TCP port (binds 0.0.0.0); 0 disables TCP gRPC.")
    grpc_socket_path: str = _flag("", "string", "If non-empty, gRPC also listens on this UNIX socket.")
    rest_api_port: int = _flag(0, "int32", "HTTP/REST port; 0 = no REST API. Must differ from --port.")
    rest_api_num_threads: int = _flag(4 * N_CPU, "int32", "REST executor threads.")
    rest_api_timeout_in_ms: int = _flag(30000, "int32", "Timeout of REST predict/classify/regress calls.")
    rest_api_enable_cors_support: bool = _flag(False, "bool", "Add CORS headers to REST responses.")
    enable_batching: bool = _flag(False, "bool", "Batch requests (see --batching_parameters_file).")
    allow_version_labels_for_unavailable_models: bool = _flag(
        False, "bool", "Allow assigning unused version labels to versions that are not available yet."
    )
    batching_parameters_file: str = _flag(
        "", "string", "Text-format BatchingParameters file; needs --enable_batching."
    )
    enable_per_model_batching_parameters: bool = _flag(
        False,
        "bool",
        "Read batching_params.pbtxt from each model version directory (with --enable_batching).",
    )
    model_config_file: str = _flag(
        "",
        "string",
        "Text-format ModelServerConfig file; when set, --model_name/--model_base_path are ignored.",
    )
    model_config_file_poll_wait_seconds: int = _flag(
        0, "int32", "Re-read --model_config_file every N seconds; 0 = read once."
    )
    model_name: str = _flag("default", "string", "Model name (ignored with --model_config_file).")
    model_base_path: str = _flag(
        "", "string", "Path or URI holding the numbered version directories (required without a config file)."
    )
    num_load_threads: int = _flag(0, "int32", "Threads loading versions after the initial load; 0 = one.")
    num_unload_threads: int = _flag(0, "int32", "Threads unloading versions; 0 = one.")
    max_num_load_retries: int = _flag(5, "int32", "Retries after a failed load; 0 = a single attempt.")
    load_retry_interval_micros: int = _flag(
        60_000_000, "int64", "Wait between load retries in microseconds; negative = no wait."
    )
    file_system_poll_wait_seconds: int = _flag(
        1, "int32", "Seconds between polls of the base paths; 0 = poll once; negative = never."
    )
    flush_filesystem_caches: bool = _flag(True, "bool", "Flush filesystem caches after loads.")
    tensorflow_session_parallelism: int = _flag(
        0, "int64", "Intra- and inter-op threads of a session; 0 = TensorFlow chooses."
    )
    tensorflow_session_config_file: str = _flag("", "string", "Text-format tensorflow.ConfigProto file.")
    tensorflow_intra_op_parallelism: int = _flag(0, "int64", "Intra-op threads; 0 = TensorFlow chooses.")
    tensorflow_inter_op_parallelism: int = _flag(0, "int64", "Inter-op threads; 0 = TensorFlow chooses.")
    use_alts_credentials: bool = _flag(
        False, "bool", "Google ALTS credentials (not supported).")
    ssl_config_file: str = _flag("", "string", "Text-format SSLConfig file: TLS on the gRPC port.")
    platform_config_file: str = _flag("", "string", "Text-format PlatformConfigMap file.")
    per_process_gpu_memory_fraction: float = _flag(
        0.0, "float", "GPU memory fraction per process; 0 = TensorFlow chooses.")
    saved_model_tags: str = _flag("serve", "string", "Comma-separated MetaGraph tags to load.")
    grpc_channel_arguments: str = _flag(
        "",
        "string",
        "Comma-separated key=value gRPC server arguments (e.g. grpc.max_connection_age_ms=2000).",
    )
    grpc_max_threads: int = _flag(4 * N_CPU, "int32", "Maximum gRPC server threads.")
    enable_model_warmup: bool = _flag(
        True, "bool", "Replay assets.extra/tf_serving_warmup_requests when a version loads."
    )
    num_request_iterations_for_warmup: int = _flag(
        0, "int32", "Times each warmup record is replayed, if > 0 (default once)."
    )
    version: bool = _flag(False, "bool", "Print the version and exit.")
    monitoring_config_file: str = _flag(
        "", "string", "Text-format MonitoringConfig file (Prometheus page on the REST port)."
    )
    remove_unused_fields_from_bundle_metagraph: bool = _flag(
        True, "bool", "Keep only the SignatureDefs of the MetaGraphDef in memory.")
    prefer_tflite_model: bool = _flag(False, "bool", "Load model.tflite if present.")
    num_tflite_pools: int = _flag(N_CPU, "int32", "TFLite interpreter pools.")
    num_tflite_interpreters_per_pool: int = _flag(1, "int32", "TFLite interpreters per pool.")
    enable_signature_method_name_check: bool = _flag(
        False, "bool", "Check SignatureDef method_name against the API (off: TF2 models work)."
    )
    xla_cpu_compilation_enabled: bool = _flag(False, "bool", "Allow XLA:CPU JIT.")
    xla_gpu_compilation_enabled: bool = _flag(False, "bool", "Allow XLA:CPU and XLA:GPU JIT.")
    enable_profiler: bool = _flag(True, "bool", "TensorFlow profiler service.")
    thread_pool_factory_config_file: str = _flag(
        "", "string", "Text-format ThreadPoolConfig file.")
    mixed_precision: str = _flag("", "string", "Mixed precision mode, e.g. bfloat16.")
    skip_initialize_tpu: bool = _flag(False, "bool", "Skip TPU initialization.")
    # Default differs from TF Serving (false); see the class docstring.
    enable_grpc_healthcheck_service: bool = _flag(
        True, "bool", "grpc.health.v1.Health with ModelService and PredictionService SERVING (default on)."
    )
    enable_serialization_as_tensor_content: bool = _flag(
        False, "bool", "Predict responses carry tensor_content instead of typed *_val fields."
    )

    # --- aspired's own flags (not in tensorflow_model_server) ---
    # TF Serving hard-codes AvailabilityPreservingPolicy; resource_preserving unloads old versions first.
    aspired_version_policy: str = _flag(
        "availability_preserving",
        "string",
        "Version transition policy: availability_preserving|resource_preserving.",
    )
    # TF Serving hard-codes ServerCore's num_initial_load_threads = 4 x CPUs for the loads at startup.
    num_initial_load_threads: int = _flag(4 * N_CPU, "int32", "Threads loading the initial versions.")
    # A version directory is eligible once it holds this file; empty = complete and unchanged for two polls.
    version_ready_marker: str = _flag(
        "", "string", "File whose presence marks a version directory as complete (default: stable listing)."
    )
    log_format: str = _flag("json", "string", "Log line format: json|console.")
    log_level: str = _flag("info", "string", "Log level: debug|info|warning|error|critical.")
    # Fraction of requests that get a `request_finished` log line (errors are always logged).
    request_log_sample_rate: float = _flag(1.0, "float", "Fraction of requests logged, 0..1.")
    # On SIGTERM: readiness turns false at once, new requests are still accepted for this long (so load
    # balancers can stop routing here), then the listeners close and in-flight work drains.
    drain_delay_seconds: float = _flag(0.0, "float", "Seconds between readiness=false and closing listeners.")
    # Upper bound on draining in-flight and queued requests after SIGTERM before the process exits anyway.
    shutdown_grace_seconds: float = _flag(30.0, "float", "Seconds allowed for draining on shutdown.")
    # Largest REST body / gRPC message accepted (TF Serving: gRPC INT32_MAX).
    max_request_bytes: int = _flag(256 * 1024 * 1024, "int64", "Largest request accepted, in bytes.")
    # What a client has started to send must be complete within this time: a REST request head or body, a
    # gRPC message, an HTTP/2 frame, a gRPC connection's handshake. Slow or stalled senders are answered 408 /
    # DEADLINE_EXCEEDED or closed, and do not hold the drain (TF Serving: no limit; gRPC handshake 120 s).
    request_read_timeout_seconds: float = _flag(
        30.0, "float", "Seconds allowed to receive a request head, body or message once it has started."
    )
    # N > 1: N frontend processes share the ports around one model-owner process (svc/workers/).
    frontend_workers: int = _flag(1, "int32", "Frontend worker processes; 1 = one process, no IPC.")
    # Ops TF Serving only has when its binary is rebuilt: Python modules whose import registers ops
    # (tensorflow_text, ...) and op libraries (tf.load_op_library), loaded before any model (issue 13).
    custom_op_modules: str = _flag(
        "", "string", "Comma-separated Python modules imported before models load (e.g. tensorflow_text)."
    )
    custom_op_libraries: str = _flag(
        "", "string", "Comma-separated op libraries (.so) loaded with tf.load_op_library before models load."
    )


FLAGS: Final = tuple(fields(Options))

# The one table of `tensorflow_model_server` flags accepted for compatibility and not acted on, with the
# reason; each is logged as `flag_ignored` at start-up when set, and listed in the README. Every other flag
# is applied, and tests/unit/test_flag_table.py names the test that shows its effect (issue 10).
IGNORED_FLAGS: Final[dict[str, str]] = {
    "rest_api_num_threads": "REST runs on the asyncio event loop; inference threads are num_batch_threads",
    "grpc_max_threads": "gRPC runs on the asyncio event loop; inference threads are num_batch_threads",
    "flush_filesystem_caches": "the local and fsspec filesystems used here keep no caches to flush",
    "use_alts_credentials": "there is no ALTS outside Google's infrastructure",
    "platform_config_file": "the only platform is tensorflow, configured by the other flags",
    "remove_unused_fields_from_bundle_metagraph": "always on: only the SignatureDefs are kept in memory",
    "prefer_tflite_model": "TensorFlow Lite models are not served",
    "num_tflite_pools": "TensorFlow Lite models are not served",
    "num_tflite_interpreters_per_pool": "TensorFlow Lite models are not served",
    "xla_cpu_compilation_enabled": "XLA JIT is TensorFlow's own per-graph choice here",
    "xla_gpu_compilation_enabled": "XLA JIT is TensorFlow's own per-graph choice here",
    "enable_profiler": "no TensorFlow profiler service is started",
    "thread_pool_factory_config_file": "no custom inter/intra-op thread pool factories",
    "mixed_precision": "no bfloat16 graph rewrite is applied",
    "skip_initialize_tpu": "no TPU support",
}


def ignored_flags(options: Options) -> list[str]:
    """Names of the accepted-but-ignored TF flags that `options` sets to something other than the default."""
    return [
        flag.name
        for flag in FLAGS
        if flag.name in IGNORED_FLAGS and getattr(options, flag.name) != flag.default
    ]


def model_server_config(options: Options) -> ModelServerConfig:
    """The initial ModelServerConfig: `--model_config_file` parsed, else the single model of
    `--model_name` / `--model_base_path` on platform "tensorflow" (`BuildSingleModelConfig`)."""
    if options.model_config_file:
        return parse_text_config(Path(options.model_config_file), model_server_config_pb2.ModelServerConfig)
    config = model_server_config_pb2.ModelServerConfig()
    model = config.model_config_list.config.add()
    model.name = options.model_name
    model.base_path = options.model_base_path
    model.model_platform = TENSORFLOW_PLATFORM
    return config


def batching_parameters(options: Options) -> BatchingParameters | None:
    """None without `--enable_batching`; else `--batching_parameters_file` (or, without one, TF's
    `thread_pool_name: "model_server_batch_threads"`) with every unset field set to the default TF's
    SharedBatchScheduler / BatchingSession apply (reference section e), so readers need no `HasField`."""
    if not options.enable_batching:
        return None
    if options.batching_parameters_file:
        params = parse_text_config(Path(options.batching_parameters_file), config_pb2.BatchingParameters)
    else:
        params = config_pb2.BatchingParameters()
        params.thread_pool_name.value = "model_server_batch_threads"
    return _with_batching_defaults(params)


PER_MODEL_BATCHING_FILE: Final = "batching_params.pbtxt"


def per_model_batching_parameters(options: Options, version_dir: str) -> BatchingParameters | None:
    """`--enable_per_model_batching_parameters` (with `--enable_batching`): the version directory's own
    `batching_params.pbtxt`, with TF's defaults; None when the flags are off or the file is absent."""
    if not (options.enable_batching and options.enable_per_model_batching_parameters):
        return None
    path = Path(version_dir) / PER_MODEL_BATCHING_FILE
    if not path.is_file():
        return None
    return _with_batching_defaults(parse_text_config(path, config_pb2.BatchingParameters))


def _with_batching_defaults(params: BatchingParameters) -> BatchingParameters:
    defaults: dict[str, Any] = {
        "max_batch_size": 1000,
        "batch_timeout_micros": 0,
        "max_enqueued_batches": 10,
        "num_batch_threads": N_CPU,
        "thread_pool_name": "batch_threads",
        "enable_large_batch_splitting": False,
    }
    for name, value in defaults.items():
        if not params.HasField(name):
            getattr(params, name).value = value
    if not params.HasField("max_execution_batch_size"):
        params.max_execution_batch_size.value = params.max_batch_size.value
    return params


def monitoring_config(options: Options) -> MonitoringConfig:
    """`--monitoring_config_file` (an empty config without one), with the Prometheus path defaulted."""
    if options.monitoring_config_file:
        config = parse_text_config(Path(options.monitoring_config_file), config_pb2.MonitoringConfig)
    else:
        config = config_pb2.MonitoringConfig()
    if not config.prometheus_config.path:
        config.prometheus_config.path = PROMETHEUS_PATH
    return config


def ssl_config(options: Options) -> SSLConfig | None:
    """`--ssl_config_file` parsed; None without one (plaintext gRPC)."""
    if not options.ssl_config_file:
        return None
    return parse_text_config(Path(options.ssl_config_file), config_pb2.SSLConfig)


_INT32 = re.compile(r"\s*[+-]?\d+")


def grpc_channel_arguments(options: Options) -> list[tuple[str, int | str]]:
    """`--grpc_channel_arguments` as (key, value) pairs; a value that is an int32 is passed as an int."""
    result: list[tuple[str, int | str]] = []
    if not options.grpc_channel_arguments:
        return result
    for item in options.grpc_channel_arguments.split(","):
        key, equals, text = item.partition("=")
        if not equals:
            raise invalid_argument(f"grpc_channel_arguments item {item!r} is not of the form key=value")
        value: int | str = text
        if _INT32.fullmatch(text) and -(2**31) <= int(text) < 2**31:
            value = int(text)
        result.append((key, value))
    return result


def comma_list(text: str) -> tuple[str, ...]:
    """A comma-separated flag value as its non-empty items, stripped."""
    return tuple(item.strip() for item in text.split(",") if item.strip())


_MODULE_NAME = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")


def validate_options(options: Options) -> None:
    """`Server::BuildAndStart`'s checks, in its order, plus parsing every config file the options name and
    validating the initial model config (as `ServerCore::Create` does). Raises ServingError."""
    if options.port == 0 and not options.grpc_socket_path:
        raise invalid_argument(
            "At least one of server_options.grpc_port or server_options.grpc_socket_path must be set."
        )
    if options.use_alts_credentials and options.ssl_config_file:
        raise invalid_argument("Either use_alts_credentials must be false or ssl_config_file must be empty.")
    if not options.model_base_path and not options.model_config_file:
        raise invalid_argument(
            "Both server_options.model_base_path and server_options.model_config_file are empty!"
        )
    config = model_server_config(options)
    if not options.enable_batching and options.batching_parameters_file:
        raise invalid_argument(
            "server_options.batching_parameters_file is set without setting "
            "server_options.enable_batching to true."
        )
    batching_parameters(options)
    if options.tensorflow_session_config_file:  # parsed where TensorFlow is imported (svc/servables/saved_model.py)
        read_text_file(Path(options.tensorflow_session_config_file))
    if (
        options.tensorflow_intra_op_parallelism > 0
        and options.tensorflow_inter_op_parallelism > 0
        and options.tensorflow_session_parallelism > 0
    ):
        raise invalid_argument(
            "Either configure server_options.tensorflow_session_parallelism or "
            "(server_options.tensorflow_intra_op_parallelism, "
            "server_options.tensorflow_inter_op_parallelism) separately. You cannot configure all."
        )
    validate_model_server_config(config)
    ssl_config(options)
    grpc_channel_arguments(options)
    if options.rest_api_port != 0 and options.rest_api_port != options.port:
        monitoring_config(options)  # TF reads it only when it starts the REST server
    _validate_extensions(options)


def _validate_extensions(options: Options) -> None:
    choices = {
        "aspired_version_policy": ASPIRED_VERSION_POLICIES,
        "log_format": LOG_FORMATS,
        "log_level": LOG_LEVELS,
    }
    for name, allowed in choices.items():
        value = getattr(options, name)
        if value not in allowed:
            raise invalid_argument(f"--{name} must be one of {', '.join(allowed)}; got {value!r}")
    if not 0.0 <= options.request_log_sample_rate <= 1.0:
        raise invalid_argument(
            f"--request_log_sample_rate must be in [0, 1]; got {options.request_log_sample_rate}"
        )
    for name in ("drain_delay_seconds", "shutdown_grace_seconds", "num_initial_load_threads",
                 "request_read_timeout_seconds"):
        if getattr(options, name) < 0:
            raise invalid_argument(f"--{name} must not be negative; got {getattr(options, name)}")
    if options.frontend_workers < 1:
        raise invalid_argument(f"--frontend_workers must be at least 1; got {options.frontend_workers}")
    if options.max_request_bytes <= 0:
        raise invalid_argument(f"--max_request_bytes must be positive; got {options.max_request_bytes}")
    for module in comma_list(options.custom_op_modules):
        if not _MODULE_NAME.fullmatch(module):
            raise invalid_argument(f"--custom_op_modules: {module!r} is not a Python module name")
