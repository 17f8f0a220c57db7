"""aspired: a TensorFlow Serving compatible model server on asyncio."""

import os

# TensorFlow's C++ INFO/WARNING lines go to stderr before any configuration can run; keep them out of the
# server's log stream unless the user asks for them (TF Serving users set the same variable).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
