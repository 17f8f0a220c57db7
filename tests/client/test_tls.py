"""aspired-client over TLS and mutual TLS (issue 14): gRPC with `grpc_credentials`, REST with
`http_verify` (an ssl.SSLContext), against a server started with --ssl_config_file."""

from __future__ import annotations

import ssl
from pathlib import Path

import grpc
import numpy as np
import pytest
from aspired_client import Client, Code, ServingError

from tests.e2e.server import Server
from tests.e2e.test_operations import _certificates, _ssl_config
from tests.paths import testdata

pytestmark = pytest.mark.e2e

X = {"x": np.array([[1.0]], np.float32)}


@pytest.mark.parametrize("mutual", [False, True], ids=["tls", "mtls"])
def test_tls(tmp_path: Path, mutual: bool) -> None:
    certs = _certificates(tmp_path)
    config = _ssl_config(tmp_path / "ssl.config", certs, mutual)
    base = testdata("saved_model_half_plus_two_cpu")
    with Server(["--model_name=m", f"--model_base_path={base}", f"--ssl_config_file={config}"]) as server:
        client_key = certs["client_key"] if mutual else None
        client_cert = certs["client_cert"] if mutual else None
        credentials = grpc.ssl_channel_credentials(certs["ca"], client_key, client_cert)
        with Client(f"localhost:{server.grpc_port}", grpc_credentials=credentials, timeout=30) as client:
            assert client.predict("m", X)["y"].tolist() == [[2.5]]
        context = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
        if mutual:
            context.load_cert_chain(str(tmp_path / "client_cert.pem"), str(tmp_path / "client_key.pem"))
        with Client(f"https://localhost:{server.rest_port}", http_verify=context, timeout=30) as client:
            assert client.predict("m", X)["y"].tolist() == [[2.5]]
            assert client.status("m")[0].state == "AVAILABLE"
        if mutual:  # no client certificate: the handshake fails, an UNAVAILABLE server to the client
            anonymous = grpc.ssl_channel_credentials(certs["ca"])
            with Client(f"localhost:{server.grpc_port}", grpc_credentials=anonymous, timeout=10) as client:
                with pytest.raises(ServingError) as info:
                    client.predict("m", X)
                assert info.value.code is Code.UNAVAILABLE
