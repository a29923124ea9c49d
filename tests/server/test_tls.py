"""TLS and mutual TLS with certificates made in the test, from Python, the CLI and OpenSSL's
own client (grpcurl is not installable here: no package registry this machine reaches
carries it)."""

import shutil
import subprocess

import grpc
import pytest

from origin_id.server.app import OriginServer
from origin_id.server.client import OriginClient
from tests.conftest import with_settings
from tests.server.tls_certs import CertificateAuthority


@pytest.fixture
def pki(tmp_path):
    ca = CertificateAuthority(tmp_path / "pki")
    return {"ca": ca, "server": ca.issue("server", server=True), "client": ca.issue("client", server=False),
            "stranger": CertificateAuthority(tmp_path / "other", "another CA").issue("stranger", server=False)}


def serve(settings, origin, pki, mutual: bool):
    server = OriginServer(with_settings(settings, tls_cert=str(pki["server"].cert), tls_key=str(pki["server"].key),
                                        tls_client_ca=str(pki["ca"].pem.cert) if mutual else ""), origin=origin)
    server.start()
    assert server.loaded.wait(60)
    return server


def client(server, pki, cert=None, ca=None):
    ca_pem = (ca or pki["ca"].pem.cert).read_bytes()
    return OriginClient(f"localhost:{server.port}", timeout=10, tls_ca=ca_pem,
                        client_cert=cert.cert.read_bytes() if cert else None,
                        client_key=cert.key.read_bytes() if cert else None)


def fails(c: OriginClient) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        c.stats()
    c.close()
    return info.value.code()


def test_tls_serves_verified_clients_only(settings, origin, pki, capsys):
    server = serve(settings, origin, pki, mutual=False)
    try:
        with client(server, pki) as good:
            assert good.stats().references == 0
        plaintext = OriginClient(f"127.0.0.1:{server.port}", timeout=5)
        assert fails(plaintext) == grpc.StatusCode.UNAVAILABLE
        other_ca = CertificateAuthority(pki["ca"].folder / "x", "unrelated CA").pem.cert
        assert fails(client(server, pki, ca=other_ca)) == grpc.StatusCode.UNAVAILABLE
        # The CLI over TLS, as a user runs it.
        from origin_id.server.cli import main
        assert main(["stats", "--server", f"localhost:{server.port}", "--tls-ca", str(pki["ca"].pem.cert)]) == 0
        assert "references       0" in capsys.readouterr().out
        openssl = _openssl(server.port, pki["ca"].pem.cert)
        if openssl is not None:
            assert "Verify return code: 0 (ok)" in openssl.stdout and "ALPN protocol: h2" in openssl.stdout
    finally:
        server.stop(grace=1)


def test_mutual_tls_requires_a_certificate_from_the_clients_ca(settings, origin, pki):
    server = serve(settings, origin, pki, mutual=True)
    try:
        with client(server, pki, cert=pki["client"]) as good:
            assert good.stats().references == 0
        assert fails(client(server, pki)) == grpc.StatusCode.UNAVAILABLE
        assert fails(client(server, pki, cert=pki["stranger"])) == grpc.StatusCode.UNAVAILABLE
        # OpenSSL's client, over TLS 1.2 (where the client's certificate is part of the handshake):
        # refused without a certificate, let in with the client's.
        refused = _openssl(server.port, pki["ca"].pem.cert, "-tls1_2")
        if refused is not None:
            assert refused.returncode != 0
            let_in = _openssl(server.port, pki["ca"].pem.cert, "-tls1_2", "-cert", str(pki["client"].cert),
                              "-key", str(pki["client"].key))
            assert let_in.returncode == 0 and "Verify return code: 0 (ok)" in let_in.stdout
    finally:
        server.stop(grace=1)


def _openssl(port: int, ca, *extra: str) -> subprocess.CompletedProcess | None:
    """OpenSSL's client, a TLS peer that is not Python's gRPC, against the server."""
    if shutil.which("openssl") is None:
        return None
    return subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost",
                           "-CAfile", str(ca), "-alpn", "h2", "-verify_return_error", *extra],
                          input="", capture_output=True, text=True, errors="replace", timeout=30)
