"""HTTPS of the REST listener (TLS_CERT_FILE, TLS_KEY_FILE) on real server processes: the API
and the `__Host-mes_session` cookie over https, nothing over plain http on that port, a
clear exit for an unusable certificate and key, file copies between TLS nodes, and the
`mes_session` cookie behind a trusted proxy."""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mes.config import ConfigError, load_settings
from tests.auth import admin_headers
from tests.cluster import Cluster, ServerProcess
from tests.polling import wait_for
from tests.ports import free_port

pytestmark = pytest.mark.cluster

PASSWORD = "correct horse battery"
SESSION = "__Host-mes_session"


@dataclass(frozen=True)
class Pki:
    """A test CA and a server certificate it signed for localhost and 127.0.0.1."""

    ca: Path
    cert: Path
    key: Path
    other_key: Path  # a key of no certificate here
    encrypted_key: Path  # the server key under a password

    def context(self) -> ssl.SSLContext:
        """A client context that trusts the test CA only."""
        return ssl.create_default_context(cafile=str(self.ca))


def _pem_key(key: ec.EllipticCurvePrivateKey, password: bytes | None = None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password) if password
        else serialization.NoEncryption())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             encryption)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    base = tmp_path_factory.mktemp("pki")
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mes test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(hours=1))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                       crl_sign=True, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False,
                                       decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                         critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    pki = Pki(base / "ca.pem", base / "cert.pem", base / "key.pem", base / "other-key.pem",
              base / "encrypted-key.pem")
    pki.ca.write_bytes(ca.public_bytes(pem))
    pki.cert.write_bytes(cert.public_bytes(pem))
    pki.key.write_bytes(_pem_key(key))
    pki.other_key.write_bytes(_pem_key(ec.generate_private_key(ec.SECP256R1())))
    pki.encrypted_key.write_bytes(_pem_key(key, b"a password"))
    for path in (pki.key, pki.other_key, pki.encrypted_key):
        path.chmod(0o600)
    return pki


def _tls_env(pki: Pki) -> dict[str, str]:
    return {"TLS_CERT_FILE": str(pki.cert), "TLS_KEY_FILE": str(pki.key)}


def _over_https(node: ServerProcess, pki: Pki) -> ServerProcess:
    """The node's admin client, on https trusting the test CA."""
    node.client.close()
    node.client = httpx.Client(base_url=f"https://127.0.0.1:{node.http_port}/api/v1",
                               verify=pki.context(), timeout=15.0, headers=admin_headers())
    return node


@pytest.fixture
def tls_node(tmp_path: Path, pki: Pki) -> Iterator[ServerProcess]:
    node = _over_https(ServerProcess(0, tmp_path, _tls_env(pki)), pki)
    try:
        node.start()
        wait_for(node.admin_ready, 90, "the node to be ready and its admin made")
        yield node
    finally:
        node.stop()
        node.client.close()


def _attributes(set_cookie: str) -> set[str]:
    return {part.strip().lower() for part in set_cookie.split(";")[1:]}


def test_https_serves_the_api_and_a_host_only_secure_session_cookie(
        tls_node: ServerProcess, pki: Pki) -> None:
    base = f"https://127.0.0.1:{tls_node.http_port}/api/v1"
    health = tls_node.client.get("/health")
    assert health.status_code == 200 and health.json()["status"] == "ok", health.text
    created = tls_node.client.post("/users", json={"name": "tess", "role": "user",
                                                   "password": PASSWORD})
    assert created.status_code == 201, created.text

    with httpx.Client(base_url=base, verify=pki.context(), timeout=15.0) as page:
        signed = page.post("/session", json={"name": "tess", "password": PASSWORD})
        assert signed.status_code == 200, signed.text
        cookie = signed.headers["set-cookie"]
        assert cookie.startswith(f"{SESSION}=mes_"), cookie
        attributes = _attributes(cookie)
        assert {"secure", "httponly", "path=/", "samesite=strict"} <= attributes, cookie
        assert not any(a.startswith("domain") for a in attributes), cookie
        token = cookie.split(";", 1)[0].split("=", 1)[1]
        assert page.get("/users/me").json()["name"] == "tess"  # the browser-like cookie jar

        with httpx.Client(base_url=base, verify=pki.context(), timeout=15.0) as other:
            me = other.get("/users/me", headers={"Cookie": f"{SESSION}={token}"})
            assert me.status_code == 200 and me.json()["name"] == "tess", me.text
            # The plain name is not read on a TLS node: a sibling service on plain http
            # could set that one (session fixation).
            plain = other.get("/users/me", headers={"Cookie": f"mes_session={token}"})
            assert plain.status_code == 401, plain.text

        out = page.delete("/session", headers={"X-Requested-With": "mes"})
        assert out.status_code == 204, out.text
        cleared = out.headers["set-cookie"]
        assert cleared.startswith(f'{SESSION}=""') and "secure" in _attributes(cleared)
        assert page.get("/session", headers={"Cookie": f"{SESSION}={token}"}).status_code == 401

    # Plain http to the TLS port gets no answer, and neither does a client that does not
    # trust the certificate; the node goes on serving https.
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{tls_node.http_port}/api/v1/health/live", timeout=5.0)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{base}/health/live", timeout=5.0)
    assert tls_node.client.get("/health/live").status_code == 200

    # A stop does not wait for idle TLS connections (the client above keeps one open) to
    # send their close_notify, which took 30 s; the node still closes cleanly. The bound is
    # below those 30 s with room for a loaded machine's shutdown.
    assert tls_node.process is not None
    tls_node.process.terminate()
    assert tls_node.process.wait(20) == 0, tls_node.log_tail()


def _start(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("RAFT_", "HTTP_", "TLS_"))}
    env = {**clean, "DATA_DIR": str(tmp_path / "data"), "UPLOAD_PATH": str(tmp_path / "up"),
           "HTTP_HOST": "127.0.0.1", "HTTP_PORT": str(free_port()),
           "RAFT_SELF": f"127.0.0.1:{free_port()}", **env}
    return subprocess.run([sys.executable, "-m", "mes"], capture_output=True, text=True,
                          timeout=30, env=env, cwd=tmp_path, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize(("files", "message"), [
    (("cert", "other_key"), "TLS_KEY_FILE: {other_key} is not the key of the certificate "
                            "in TLS_CERT_FILE (CN=localhost)"),
    (("cert", "encrypted_key"), "TLS_KEY_FILE: {encrypted_key} is encrypted"),
    (("cert", "cert"), "TLS_KEY_FILE: {cert} holds no usable PEM private key"),
    (("key", "key"), "TLS_CERT_FILE: {key} holds no PEM certificate"),
    (("missing", "key"), "TLS_CERT_FILE: cannot read {missing} (No such file or directory)"),
    (("cert", None), "HTTPS needs TLS_CERT_FILE and TLS_KEY_FILE together; missing: "
                     "TLS_KEY_FILE"),
    ((None, "key"), "missing: TLS_CERT_FILE"),
])
def test_an_unusable_certificate_or_key_stops_the_node_with_one_line(
        tmp_path: Path, pki: Pki, files: tuple[str | None, str | None], message: str) -> None:
    paths = {"cert": pki.cert, "key": pki.key, "other_key": pki.other_key,
             "encrypted_key": pki.encrypted_key, "missing": tmp_path / "absent.pem"}
    cert, key = files
    env = {}
    if cert:
        env["TLS_CERT_FILE"] = str(paths[cert])
    if key:
        env["TLS_KEY_FILE"] = str(paths[key])
    result = _start(tmp_path, **env)
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mes: invalid configuration: "), lines
    assert message.format(**{k: str(v) for k, v in paths.items()}) in lines[0], lines
    assert not (tmp_path / "data").exists()  # nothing started


def test_the_settings_pair_the_files_and_advertise_https(tmp_path: Path, pki: Pki) -> None:
    with pytest.raises(ConfigError, match="missing: TLS_KEY_FILE"):
        load_settings(_env_file=None, data_dir=tmp_path, tls_cert_file=str(pki.cert))
    settings = load_settings(_env_file=None, data_dir=tmp_path, http_host="0.0.0.0",
                             http_port=8443, raft_self="10.0.0.5:7000",
                             tls_cert_file=f" {pki.cert} ", tls_key_file=str(pki.key))
    assert settings.tls_enabled and settings.tls_cert_file == str(pki.cert)
    assert settings.advertise_url == "https://10.0.0.5:8443"
    plain = load_settings(_env_file=None, data_dir=tmp_path, http_port=8000,
                          raft_self="10.0.0.5:7000", http_host="0.0.0.0")
    assert not plain.tls_enabled and plain.advertise_url == "http://10.0.0.5:8000"


def test_tls_nodes_copy_files_to_each_other_over_https(tmp_path: Path, pki: Pki) -> None:
    # SSL_CERT_FILE: the nodes' own https clients (file copies) trust the test CA.
    cluster = Cluster(2, tmp_path, **_tls_env(pki), SSL_CERT_FILE=str(pki.ca))
    for node in cluster.nodes:
        _over_https(node, pki)
    try:
        cluster.start()
        first, second = cluster.nodes
        wait_for(lambda: all(n["http_url"] and n["http_url"].startswith("https://")
                             for n in first.cluster()["nodes"]) and
                 len(first.cluster()["nodes"]) == 2, 60, "both nodes to announce https URLs")
        content = b"G28\nG1 X5 Y5\n" * 100
        response = first.client.post("/files", files={"file": ("part.gcode", content)})
        assert response.status_code == 201, response.text  # a majority is both nodes
        sha = response.json()["id"]
        assert (second.data_dir / "upload" / sha[:2] / sha).read_bytes() == content
    finally:
        cluster.stop()


def test_behind_a_trusted_proxy_the_plain_cookie_is_secure(tmp_path: Path) -> None:
    # Without TLS settings uvicorn's proxy headers apply: X-Forwarded-Proto from
    # FORWARDED_ALLOW_IPS (default loopback) makes the request https, the cookie Secure.
    node = ServerProcess(0, tmp_path, {})
    try:
        node.start()
        wait_for(node.admin_ready, 90, "the node to be ready and its admin made")
        assert node.client.post("/users", json={"name": "pat", "role": "user",
                                                "password": PASSWORD}).status_code == 201
        body = {"name": "pat", "password": PASSWORD}
        proxied = node.client.post("/session", json=body, headers={
            "Authorization": "", "X-Forwarded-Proto": "https", "X-Forwarded-For": "192.0.2.7"})
        assert proxied.status_code == 200, proxied.text
        cookie = proxied.headers["set-cookie"]
        assert cookie.startswith("mes_session=mes_") and "secure" in _attributes(cookie)
        direct = node.client.post("/session", json=body, headers={"Authorization": ""})
        assert "secure" not in _attributes(direct.headers["set-cookie"])
    finally:
        node.stop()
        node.client.close()
