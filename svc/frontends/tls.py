"""TLS from `--ssl_config_file` (TF Serving's SSLConfig: PEM contents of server_key, server_cert, custom_ca,
and client_verify for mutual TLS): for gRPC as TF Serving does, and for REST as aspired's extension."""

from __future__ import annotations

import contextlib
import os
import ssl
import tempfile
from typing import Any

_files: list[str] = []


def _pem_file(contents: str) -> str:
    """ssl wants files; the PEMs live in the config file itself. Kept private to this process (0600)."""
    fd, path = tempfile.mkstemp(prefix="aspired-", suffix=".pem")
    with os.fdopen(fd, "w") as handle:
        handle.write(contents)
    _files.append(path)
    return path


def server_context(config: Any, alpn: list[str]) -> ssl.SSLContext | None:
    if config is None or not config.server_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(_pem_file(config.server_cert), _pem_file(config.server_key))
    if config.custom_ca:
        context.load_verify_locations(cadata=config.custom_ca)
    if config.client_verify:
        context.verify_mode = ssl.CERT_REQUIRED
    context.set_alpn_protocols(alpn)
    return context


def grpc_context(config: Any) -> ssl.SSLContext | None:
    return server_context(config, ["h2"])


def configure_hypercorn(hconfig: Any, config: Any) -> None:
    if config is None or not config.server_cert:
        return
    hconfig.certfile = _pem_file(config.server_cert)
    hconfig.keyfile = _pem_file(config.server_key)
    if config.custom_ca:
        hconfig.ca_certs = _pem_file(config.custom_ca)
    if config.client_verify:
        hconfig.verify_mode = ssl.CERT_REQUIRED


def remove_files() -> None:
    while _files:
        with contextlib.suppress(OSError):
            os.unlink(_files.pop())
