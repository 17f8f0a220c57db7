"""The flag rule (issue 10): every flag is either applied, with a test that shows its effect, or in the one
table of ignored flags (`svc.options.IGNORED_FLAGS`), which is logged at start-up and listed in the README.
A new flag that is neither fails here."""

from __future__ import annotations

import ast
import re

import pytest

from svc import config_files
from svc import options as opts
from svc.errors import ServingError
from svc.lifecycle.config_watcher import check_labels
from svc.servables.saved_model import load, session_config
from tests.paths import REPO, testdata

# flag -> the test that shows its effect ("path::function")
APPLIED: dict[str, str] = {
    "port": "tests/e2e/test_grpc.py::test_predict_half_plus_two",
    "grpc_socket_path": "tests/e2e/test_operations.py::test_grpc_unix_socket",
    "rest_api_port": "tests/e2e/test_rest.py::test_predict_row_format",
    "rest_api_timeout_in_ms": "tests/e2e/test_batching.py::test_rest_timeout_drops_a_queued_request",
    "rest_api_enable_cors_support": "tests/e2e/test_operations.py::test_cors_headers_when_enabled",
    "enable_batching": "tests/e2e/test_batching.py::test_full_queue_is_unavailable_at_once",
    "allow_version_labels_for_unavailable_models":
        "tests/unit/test_flag_table.py::test_allow_version_labels_for_unavailable_models",
    "batching_parameters_file": "tests/unit/test_options.py::test_batching_file_values_and_defaults",
    "enable_per_model_batching_parameters": "tests/e2e/test_flags.py::test_per_model_batching_parameters",
    "model_config_file": "tests/e2e/test_lifecycle.py::test_labels_in_the_config_file_at_startup",
    "model_config_file_poll_wait_seconds": "tests/e2e/test_lifecycle.py::test_config_file_is_polled",
    "model_name": "tests/unit/test_options.py::test_model_server_config_single_model",
    "model_base_path": "tests/unit/test_options.py::test_model_server_config_single_model",
    "num_load_threads": "tests/unit/test_loader_pool.py::test_load_threads_bound_parallel_loads",
    "num_unload_threads": "tests/unit/test_loader_pool.py::test_unload_threads_bound_parallel_unloads",
    "max_num_load_retries": "tests/e2e/test_lifecycle.py::test_broken_new_version_keeps_the_old_one_serving",
    "load_retry_interval_micros": "tests/e2e/test_lifecycle.py::test_broken_new_version_keeps_the_old_one_serving",
    "file_system_poll_wait_seconds": "tests/e2e/test_lifecycle.py::test_hot_swap_under_load_has_zero_failed_requests",
    "tensorflow_session_parallelism": "tests/unit/test_flag_table.py::test_session_config_flags",
    "tensorflow_session_config_file":
        "tests/e2e/test_flags.py::test_tensorflow_session_config_file_reaches_the_sessions",
    "tensorflow_intra_op_parallelism": "tests/unit/test_flag_table.py::test_session_config_flags",
    "tensorflow_inter_op_parallelism": "tests/unit/test_flag_table.py::test_session_config_flags",
    "ssl_config_file": "tests/e2e/test_operations.py::test_tls",
    "per_process_gpu_memory_fraction": "tests/unit/test_flag_table.py::test_session_config_flags",
    "saved_model_tags": "tests/unit/test_flag_table.py::test_saved_model_tags_choose_the_meta_graph",
    "grpc_channel_arguments": "tests/e2e/test_flags.py::test_max_connection_age_sends_goaway",
    "enable_model_warmup": "tests/e2e/test_warmup.py::test_warmup_disabled",
    "num_request_iterations_for_warmup": "tests/e2e/test_warmup.py::test_warmup_runs_before_available",
    "version": "tests/unit/test_cli.py::test_version",
    "monitoring_config_file": "tests/e2e/test_operations.py::test_metrics_and_request_logs",
    "enable_signature_method_name_check": "tests/e2e/test_classify_regress.py::test_method_name_check",
    "enable_grpc_healthcheck_service": "tests/e2e/test_operations.py::test_drain_on_sigterm_under_load",
    "enable_serialization_as_tensor_content": "tests/e2e/test_dtypes.py::test_grpc_round_trip",
    # aspired's own flags
    "aspired_version_policy": "tests/e2e/test_lifecycle.py::test_resource_preserving_unloads_before_loading",
    "num_initial_load_threads": "tests/unit/test_loader_pool.py::test_load_threads_bound_parallel_loads",
    "version_ready_marker": "tests/e2e/test_discovery.py::test_ready_marker",
    "log_format": "tests/e2e/test_operations.py::test_drain_on_sigterm_under_load",
    "log_level": "tests/unit/test_flag_table.py::test_log_level",
    "request_log_sample_rate": "tests/unit/test_request_log.py::test_sampling_limits_lines_not_metrics",
    "drain_delay_seconds": "tests/e2e/test_operations.py::test_drain_on_sigterm_under_load",
    "shutdown_grace_seconds": "tests/e2e/test_operations.py::test_drain_on_sigterm_under_load",
    "max_request_bytes": "tests/e2e/test_operations.py::test_request_size_limits",
    "request_read_timeout_seconds": "tests/e2e/test_wire_faults.py::test_slow_body_is_answered_408",
    "frontend_workers": "tests/e2e/test_workers.py::test_a_reload_is_visible_to_the_frontend_that_asked",
    "custom_op_modules": "tests/e2e/test_custom_ops.py::test_without_the_module_startup_fails_naming_the_flag_and_package",
    "custom_op_libraries": "tests/unit/test_custom_ops.py::test_load_custom_ops_errors",
}


def _test_functions(path: str) -> set[str]:
    tree = ast.parse((REPO / path).read_text())
    return {node.name for node in tree.body if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)}


@pytest.mark.parametrize("flag", [f.name for f in opts.FLAGS])
def test_every_flag_is_applied_or_ignored(flag: str) -> None:
    applied, ignored = flag in APPLIED, flag in opts.IGNORED_FLAGS
    assert applied != ignored, f"--{flag} must be in exactly one of APPLIED (with its test) or IGNORED_FLAGS"
    if applied:
        path, function = APPLIED[flag].split("::")
        assert function in _test_functions(path), f"--{flag}: {APPLIED[flag]} does not exist"


def test_the_tables_name_only_real_flags() -> None:
    names = {f.name for f in opts.FLAGS}
    assert set(APPLIED) <= names
    assert set(opts.IGNORED_FLAGS) <= names


def test_readme_lists_every_ignored_flag() -> None:
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Flags TF Serving has that this server ignores"):]
    for flag in opts.IGNORED_FLAGS:
        assert re.search(rf"`--{flag}`", section), f"README does not list --{flag}"


def test_session_config_flags() -> None:
    config = session_config(3, 0, 0, "allow_soft_placement: true", 0.25)
    assert config.intra_op_parallelism_threads == 3
    assert config.inter_op_parallelism_threads == 0
    assert config.allow_soft_placement  # from --tensorflow_session_config_file
    assert config.gpu_options.per_process_gpu_memory_fraction == 0.25
    both = session_config(0, 0, 5)
    assert (both.intra_op_parallelism_threads, both.inter_op_parallelism_threads) == (5, 5)
    with pytest.raises(ServingError, match=r"Error parsing text-format tensorflow\.ConfigProto"):
        session_config(0, 0, 0, "no_such_field: 1")


def test_saved_model_tags_choose_the_meta_graph() -> None:
    path = str(testdata("saved_model_half_plus_two_cpu") / "00000123")
    servable = load("m", 1, path, ["serve"])
    servable.close()
    with pytest.raises(Exception, match="tags"):
        load("m", 1, path, ["no-such-tag"])


def test_allow_version_labels_for_unavailable_models() -> None:
    config = config_files.ModelServerConfig()
    model = config.model_config_list.config.add()
    model.name, model.base_path, model.model_platform = "m", "/m", "tensorflow"
    model.version_labels["stable"] = 7  # version 7 is not available
    with pytest.raises(ServingError, match="not currently available for inference"):
        check_labels(config, None, {}, allow_unavailable=False)
    check_labels(config, None, {}, allow_unavailable=True)


def test_log_level(capsys: pytest.CaptureFixture[str]) -> None:
    from svc.logging import configure_logging, get_logger

    try:
        configure_logging("json", "warning")
        log = get_logger(actor="test")
        log.info("not_shown")
        log.warning("shown")
        out = capsys.readouterr().out
    finally:
        configure_logging("json", "debug")  # the session's configuration again (tests/conftest.py)
    assert "shown" in out
    assert "not_shown" not in out

