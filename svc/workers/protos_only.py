"""Importing TensorFlow's protobuf classes without TensorFlow.

`tensorflow.core.framework.tensor_pb2` & co. live inside the `tensorflow` package, whose `__init__` loads the
whole runtime (~4 s, ~500 MB). A frontend worker needs only the generated message modules, whose own
`__init__` files are empty, so it registers a bare `tensorflow` package object that points at the installed
directory and runs none of its code: `tensorflow.core...._pb2` imports work, `tensorflow.python` (the runtime)
is never loaded, and any attempt to use TensorFlow itself fails loudly (the stub has no attributes).
"""

from __future__ import annotations

import importlib.util
import sys
import types

MARKER = "__aspired_protos_only__"


def install() -> None:
    """Call before anything imports `tensorflow` or `tensorflow_serving`; a no-op if TensorFlow is loaded."""
    if "tensorflow" in sys.modules:
        return
    spec = importlib.util.find_spec("tensorflow")
    if spec is None or spec.submodule_search_locations is None:
        raise ImportError("the tensorflow package (for its protobuf classes) is not installed")
    package = types.ModuleType("tensorflow", "TensorFlow's protobuf modules only (svc.workers.protos_only)")
    package.__path__ = list(spec.submodule_search_locations)
    package.__package__ = "tensorflow"
    setattr(package, MARKER, True)
    sys.modules["tensorflow"] = package


def runtime_loaded() -> bool:
    """Whether TensorFlow's runtime (not just its protobuf modules) is imported in this process."""
    return "tensorflow.python" in sys.modules or (
        "tensorflow" in sys.modules and not getattr(sys.modules["tensorflow"], MARKER, False)
    )
