"""Entry point of a frontend worker process (`python -m svc.workers.frontend_main CONTROL REQUESTS REPLIES
INDEX`, descriptors inherited from the owner). TensorFlow's protobuf modules are made importable without
TensorFlow before anything else is imported."""

import sys

from svc.workers import protos_only

protos_only.install()

import anyio

from svc.event_loop import backend_options
from svc.logging import line_buffered_stdout
from svc.workers.frontend import main

if __name__ == "__main__":
    line_buffered_stdout()
    control, requests, replies, index = (int(a) for a in sys.argv[1:5])
    sys.exit(
        anyio.run(
            main, control, requests, replies, index, backend="asyncio", backend_options=backend_options()
        )
    )
