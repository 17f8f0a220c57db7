"""Custom ops (issue 13): the op -> package table, the hint added to TensorFlow's unregistered-op error, the
flags and their environment defaults, and start-up errors of modules and libraries that do not load.

Nothing here imports a package that registers ops: the test process must keep TensorFlow's own registry (the
e2e tests serve such models from server subprocesses)."""

from __future__ import annotations

import anyio
import pytest

from svc import cli
from svc import options as opts
from svc.errors import Code, ServingError
from svc.servables import custom_ops
from svc.servables.custom_ops import (
    DECISION_FORESTS,
    RECOMMENDERS_ADDONS,
    SCANN,
    TENSORFLOW_ADDONS,
    TENSORFLOW_IO,
    TENSORFLOW_TEXT,
    TF_SENTENCEPIECE,
    OpPackage,
)

# TensorFlow 2.21's text for a graph node whose op is not in the registry.
TF_MESSAGE = (
    "Op type not registered '{op}' in binary running on host. Make sure the Op and Kernel are registered in "
    "the binary running in this process. Note that if you are loading a saved graph which used ops from "
    "tf.contrib (e.g. `tf.contrib.resampler`), accessing should be done before importing the graph, as "
    "contrib ops are lazily registered when the module is first accessed."
)


@pytest.mark.parametrize(
    ("op", "package"),
    [
        ("TFText>WhitespaceTokenizeWithOffsetsV2", TENSORFLOW_TEXT),
        ("FastWordpieceTokenizeWithOffsets", TENSORFLOW_TEXT),
        ("SentencepieceOp", TENSORFLOW_TEXT),
        ("RegexSplitWithOffsets", TENSORFLOW_TEXT),
        ("SentencepieceEncodeSparse", TF_SENTENCEPIECE),
        ("SimpleMLInferenceOpWithHandle", DECISION_FORESTS),
        ("SimpleMLCreateModelResource", DECISION_FORESTS),
        ("IO>AudioDecodeWAV", TENSORFLOW_IO),
        ("Addons>ScannCreateSearcher", SCANN),
        ("Addons>EmbeddingBag", TENSORFLOW_ADDONS),
        ("TFRA>CuckooHashTableFind", RECOMMENDERS_ADDONS),
        ("MyCompanyOp", None),
        ("MatMul", None),
    ],
)
def test_op_package(op: str, package: OpPackage | None) -> None:
    assert custom_ops.op_package(op) == package


def test_hint_for_a_known_package_names_the_flag_and_the_package() -> None:
    message = TF_MESSAGE.format(op="TFText>WhitespaceTokenizeWithOffsetsV2")
    explained = custom_ops.explain_load_error(message)
    assert explained is not None
    assert explained.startswith(message)  # TensorFlow's text stays first, unchanged
    assert "--custom_op_modules=tensorflow_text" in explained
    assert "tensorflow-text" in explained
    assert "aspired[text]" in explained


def test_hint_for_an_unknown_op_says_how_to_find_it() -> None:
    explained = custom_ops.explain_load_error(TF_MESSAGE.format(op="MyCompanyOp"))
    assert explained is not None
    assert "--custom_op_modules=" in explained
    assert "--custom_op_libraries=" in explained
    assert "grep -rl --include='*.so' 'MyCompanyOp'" in explained


def test_hint_when_the_module_is_loaded_but_lacks_the_op(monkeypatch: pytest.MonkeyPatch) -> None:
    package = OpPackage("aspired-test-ops", "json", "pip install aspired-test-ops")  # json: surely imported
    monkeypatch.setitem(custom_ops._OPS, "AspiredTestOp", package)
    hint = custom_ops.missing_op_hint("AspiredTestOp")
    assert "which is loaded (--custom_op_modules=json)" in hint
    assert "installed version (unknown)" in hint


def test_other_load_errors_get_no_hint() -> None:
    assert custom_ops.explain_load_error("NOT_FOUND: Could not find SavedModel .pb or .pbtxt") is None


def test_load_custom_ops_errors() -> None:
    with pytest.raises(ServingError) as missing_module:
        custom_ops.load_custom_ops(["aspired_no_such_module"], [])
    assert missing_module.value.status_text() == (
        "NOT_FOUND: --custom_op_modules: cannot import aspired_no_such_module: "
        "No module named 'aspired_no_such_module'"
    )
    with pytest.raises(ServingError) as missing_library:
        custom_ops.load_custom_ops([], ["/nonexistent/aspired_ops.so"])
    assert missing_library.value.code == Code.NOT_FOUND
    assert missing_library.value.message.startswith("--custom_op_libraries: cannot load /nonexistent/aspired_ops.so: ")


def test_load_custom_ops_of_a_module_without_ops_adds_nothing() -> None:
    assert custom_ops.load_custom_ops(["json"], []) == ()


def test_serve_ends_before_loading_anything_when_a_module_does_not_import() -> None:
    options = opts.Options(model_base_path="/nonexistent", custom_op_modules="json, aspired_no_such_module")
    from svc.server import serve

    with pytest.raises(ServingError, match="cannot import aspired_no_such_module"):
        anyio.run(serve, options)


def test_flags_and_environment_defaults() -> None:
    env = {"ASPIRED_CUSTOM_OP_MODULES": "tensorflow_text", "ASPIRED_CUSTOM_OP_LIBRARIES": "/ops/a.so,/ops/b.so"}
    options = cli.parse_args([], env)
    assert opts.comma_list(options.custom_op_modules) == ("tensorflow_text",)
    assert opts.comma_list(options.custom_op_libraries) == ("/ops/a.so", "/ops/b.so")
    options = cli.parse_args(["--custom_op_modules=a, b.c ,", "--custom_op_libraries="], env)
    assert opts.comma_list(options.custom_op_modules) == ("a", "b.c")
    assert opts.comma_list(options.custom_op_libraries) == ()


def test_a_module_flag_that_is_no_module_name_is_refused() -> None:
    options = opts.Options(model_base_path="/m", custom_op_modules="tensorflow_text,/opt/ops.so")
    with pytest.raises(ServingError, match=r"'/opt/ops\.so' is not a Python module name"):
        opts.validate_options(options)
