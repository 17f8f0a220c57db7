"""`python -m tests.e2e.launch FLAGS`: the `aspired` command line (`svc.cli.main`, then `svc.server.run` with its
signal handling and exit status) on listening sockets the test bound and handed down: their descriptors are in
ASPIRED_TEST_LISTENERS (`GRPC_FD[,REST_FD]`), so no port is chosen, closed and bound again."""

from __future__ import annotations

import functools
import os
import socket
import sys

LISTENERS_VARIABLE = "ASPIRED_TEST_LISTENERS"


def main() -> int:
    from svc import cli, server

    fds = [int(fd) for fd in os.environ.pop(LISTENERS_VARIABLE).split(",")]
    sockets = [socket.socket(fileno=fd) for fd in fds]
    for sock in sockets:
        sock.setblocking(False)
    listeners = server.Listeners(grpc=sockets[0], rest=sockets[1] if len(sockets) > 1 else None)
    return cli.main(sys.argv[1:], run=functools.partial(server.run, sockets=listeners))


if __name__ == "__main__":
    raise SystemExit(main())
