"""TLS from `--ssl_config_file` (TF Serving's SSLConfig: PEM contents of server_key, server_cert, custom_ca,
and client_verify for mutual TLS): for gRPC as TF Serving does, and for REST as aspired's extension.

One `ssl.SSLContext` is built once from the PEM contents and handed to grpclib and hypercorn alike. Key material
never touches the disk (issue 10): Python's `load_cert_chain` takes only paths, so the PEMs are written to an
anonymous in-memory file (`memfd_create`) and read through `/proc/self/fd/N`; where the platform has no
memfd, a 0600 temporary file is unlinked as soon as OpenSSL has read it.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import tempfile
from collections.abc import Iterator
from typing import Any

# gRPC clients offer only "h2"; REST clients "h2" or "http/1.1": one context serves both ports.
ALPN = ["h2", "http/1.1"]


@contextlib.contextmanager
def _pem_path(contents: str) -> Iterator[str]:
    """A path OpenSSL can read `contents` from, gone when the block ends."""
    data = contents.encode()
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("aspired-tls", os.MFD_CLOEXEC)
        try:
            os.write(fd, data)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    # No memfd: a private temporary file, unlinked right after OpenSSL read it.
    fd, path = tempfile.mkstemp(prefix="aspired-", suffix=".pem")
    try:
        os.write(fd, data)
        os.close(fd)
        yield path
    finally:
        os.unlink(path)


def server_context(config: Any) -> ssl.SSLContext | None:
    """The server's SSLContext, or None without a certificate (plaintext)."""
    if config is None or not config.server_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2  # HTTP/2 (RFC 7540 9.2) and gRPC need TLS 1.2+
    context.options |= ssl.OP_NO_COMPRESSION
    with _pem_path(config.server_cert) as cert, _pem_path(config.server_key) as key:
        context.load_cert_chain(cert, key)
    if config.custom_ca:
        context.load_verify_locations(cadata=config.custom_ca)
    if config.client_verify:
        context.verify_mode = ssl.CERT_REQUIRED
    context.set_alpn_protocols(ALPN)
    return context


def hypercorn_config(context: ssl.SSLContext | None) -> Any:
    """A hypercorn Config that serves with `context` (its own TLS settings want files)."""
    from hypercorn.config import Config

    class _Config(Config):
        @property
        def ssl_enabled(self) -> bool:
            return context is not None

        def create_ssl_context(self) -> ssl.SSLContext | None:
            return context

    return _Config()
