"""The client commands of the `aspired` command line (issue 14): run as `aspired-client` in the TF-free
venv and as `python -m svc <command>` beside the server; exit statuses by error class; warmup-record files
that TensorFlow's TFRecord reader and the server's warmup accept."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from svc.servables.warmup import load_logs
from tests.e2e.server import Server, free_port
from tests.paths import REPO, testdata

pytestmark = pytest.mark.e2e


def aspired_client(client_python: Path, *args: str) -> subprocess.CompletedProcess[str]:
    script = client_python.parent / "aspired-client"
    return subprocess.run([str(script), *args], capture_output=True, text=True, timeout=300, check=False)


def aspired(*args: str) -> subprocess.CompletedProcess[str]:
    """`aspired ...` as installed with the server (`python -m svc` is the same entry point)."""
    return subprocess.run(
        [sys.executable, "-m", "svc", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_predict_json_and_npy_inputs(client_python: Path, client_server: Server, tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.array([[1.0], [2.0]], np.float32))
    (tmp_path / "x.json").write_text("[[5.0]]")
    for server in (client_server.grpc_target, client_server.rest_url):
        for spec, y in (("x=@" + str(tmp_path / "x.npy"), [[2.5], [3.0]]), ("x=@" + str(tmp_path / "x.json"), [[4.5]]),
                        ("x=[[1], [3]]", [[2.5], [3.5]])):  # fmt: skip
            done = aspired_client(client_python, "predict", "--server", server, "--model", "half_plus_two",
                                  "--input", spec, "--json")  # fmt: skip
            assert done.returncode == 0, done.stderr
            assert json.loads(done.stdout) == {"outputs": {"y": y}}
    text = aspired_client(client_python, "predict", f"--server={client_server.grpc_target}",
                          "--model=two_versions", "--label=canary", "--input=x=[[1.0]]")  # fmt: skip
    assert text.returncode == 0, text.stderr
    assert text.stdout == "y: float32 [1, 1]\n[[2.5]]\n"


def test_status_metadata_health_and_examples(client_python: Path, client_server: Server) -> None:
    server = f"--server={client_server.rest_url}"
    status = aspired_client(client_python, "status", server, "--model=two_versions", "--json")
    assert status.returncode == 0, status.stderr
    assert [s["version"] for s in json.loads(status.stdout)["model_version_status"]] == [124, 123]
    metadata = aspired_client(client_python, "metadata", server, "--model=two_versions", "--version=123")
    assert metadata.returncode == 0, metadata.stderr
    assert metadata.stdout.startswith("two_versions version 123\n")
    assert "  input x: DT_FLOAT [-1, 1] (x:0)\n" in metadata.stdout
    health = aspired_client(client_python, "health", f"--server={client_server.grpc_target}")
    assert (health.returncode, health.stdout) == (0, "SERVING\n")
    regress = aspired_client(client_python, "regress", server, "--model=half_plus_three",
                             "--signature=tensorflow/serving/regress", '--examples=[{"x": 1.0}, {"x": 2.0}]', "--json")  # fmt: skip
    assert regress.returncode == 0, regress.stderr
    assert json.loads(regress.stdout) == {"results": [3.5, 4.0]}


def test_exit_status_by_error_class(client_python: Path, client_server: Server) -> None:
    grpc = f"--server={client_server.grpc_target}"
    missing = aspired_client(client_python, "status", grpc, "--model=nope", "--json")
    assert missing.returncode == 3
    assert json.loads(missing.stdout) == {
        "error": "Could not find any versions of model nope",
        "code": "NOT_FOUND",
        "http_status": None,
    }
    invalid = aspired_client(client_python, "predict", grpc, "--model=two_versions", "--label=nope", "--input=x=[[1.0]]",
                             "--dtype=x=float")  # fmt: skip
    assert invalid.returncode == 4
    assert invalid.stderr == "error: INVALID_ARGUMENT: Unrecognized servable version label: nope\n"
    down = aspired_client(
        client_python, "status", f"--server=127.0.0.1:{free_port()}", "--model=m", "--timeout=10"
    )
    assert down.returncode == 5, down.stderr
    usage = aspired_client(client_python, "predict", grpc, "--model=half_plus_two", "--input=x=[[1.0]")
    assert usage.returncode == 2
    assert usage.stderr.startswith("error: not JSON")
    unimplemented = aspired_client(client_python, "reload", f"--server={client_server.rest_url}",
                                   f"--config={testdata('good_model_config.txt')}")  # fmt: skip
    assert unimplemented.returncode == 6


def test_the_server_command_dispatches_client_commands(client_server: Server) -> None:
    done = aspired("predict", f"--server={client_server.rest_url}", "--model=half_plus_two", "--input=x=[[1.0]]",
                   "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"outputs": {"y": [[2.5]]}}
    # `aspired serve <flags>` is `aspired <flags>`; the TF Serving flags are unchanged
    served = aspired("serve", "--version")
    assert served.returncode == 0
    assert served.stdout == aspired("--version").stdout
    assert served.stdout.startswith("TensorFlow ModelServer: ")


def test_warmup_record_is_read_by_tensorflow_and_the_server(client_python: Path, tmp_path: Path) -> None:
    version = tmp_path / "half_plus_two" / "1"
    shutil.copytree(testdata("saved_model_half_plus_two_cpu") / "00000123", version)
    done = aspired_client(client_python, "warmup-record", str(version), "--input=x=[[1.0], [2.0]]", "--repeat=2",
                          "--model=half_plus_two", "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    path = version / "assets.extra" / "tf_serving_warmup_requests"
    assert json.loads(done.stdout) == {"path": str(path), "records": 2}
    records = [r.numpy() for r in tf.data.TFRecordDataset(str(path))]  # TensorFlow checks both CRCs
    assert len(records) == 2
    log = prediction_log_pb2.PredictionLog.FromString(records[0])
    assert log.predict_log.request.model_spec.name == "half_plus_two"
    np.testing.assert_array_equal(tf.make_ndarray(log.predict_log.request.inputs["x"]), [[1.0], [2.0]])
    assert len(load_logs(path)) == 2  # the server's own reader
    with Server(["--model_name=half_plus_two", f"--model_base_path={version.parent}"]) as server:
        events = [e for e in server.log_events() if e.get("event") == "servable_warmed_up"]
        assert events[0]["requests"] == 2


def test_warmup_record_of_classify_and_regress_examples(client_python: Path, tmp_path: Path) -> None:
    version = tmp_path / "half_plus_two" / "1"
    shutil.copytree(testdata("saved_model_half_plus_two_cpu") / "00000123", version)
    classify = aspired_client(client_python, "warmup-record", str(version), "--signature=classify_x_to_y",
                              '--examples=[{"x": 1.0}, {"x": [2.0]}]', "--repeat=2")  # fmt: skip
    assert classify.returncode == 0, classify.stderr
    regress = aspired_client(client_python, "warmup-record", str(version), "--signature=regress_x_to_y",
                             "--examples=[{}]", '--context={"x": 3.0}', "--append")  # fmt: skip
    assert regress.returncode == 0, regress.stderr
    path = version / "assets.extra" / "tf_serving_warmup_requests"
    logs = [
        prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in tf.data.TFRecordDataset(str(path))
    ]
    assert [log.WhichOneof("log_type") for log in logs] == ["classify_log", "classify_log", "regress_log"]
    assert len(logs[0].classify_log.request.input.example_list.examples) == 2
    assert logs[2].regress_log.request.input.example_list_with_context.context.features.feature[
        "x"
    ].float_list.value == [3.0]
    with Server(["--model_name=half_plus_two", f"--model_base_path={version.parent}"]) as server:
        events = [e for e in server.log_events() if e.get("event") == "servable_warmed_up"]
        assert events[0]["requests"] == 3
    wrong = aspired_client(client_python, "warmup-record", str(version), "--examples=[{}]")  # serving_default
    assert wrong.returncode == 2
    assert "--examples needs a classify or regress signature" in wrong.stderr


def test_warmup_record_runs_zero_input_signatures(client_python: Path, tmp_path: Path) -> None:
    version = tmp_path / "counter" / "1"
    shutil.copytree(testdata("saved_model_counter") / "00000123", version)
    done = aspired_client(
        client_python, "warmup-record", str(version), "--signature=incr_counter", "--repeat=3"
    )
    assert done.returncode == 0, done.stderr
    appended = aspired_client(
        client_python, "warmup-record", str(version), "--signature=incr_counter", "--append"
    )
    assert appended.returncode == 0, appended.stderr
    assert appended.stdout.endswith("(4 records)\n")
    with Server(["--model_name=counter", f"--model_base_path={version.parent}"]) as server:
        get = aspired_client(client_python, "predict", f"--server={server.grpc_target}", "--model=counter",
                             "--signature=get_counter", "--json")  # fmt: skip
        assert get.returncode == 0, get.stderr
        assert json.loads(get.stdout) == {"outputs": {"output": 4.0}}  # the 4 warmup increments ran


def test_warmup_record_refuses_unknown_signatures_and_missing_inputs(
    client_python: Path, tmp_path: Path
) -> None:
    version = tmp_path / "m" / "1"
    shutil.copytree(testdata("saved_model_half_plus_two_cpu") / "00000123", version)
    unknown = aspired_client(
        client_python, "warmup-record", str(version), "--signature=nope", "--input=x=[1.0]"
    )
    assert unknown.returncode == 2
    assert "no signature 'nope'" in unknown.stderr
    missing = aspired_client(client_python, "warmup-record", str(version))
    assert missing.returncode == 2
    assert "also needs the inputs ['x']" in missing.stderr
    assert not (version / "assets.extra").exists()
