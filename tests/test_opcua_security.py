"""OPC UA security: certificate kept in DATA_DIR, policies, farm accounts, read-only
anonymous access, per-user writes, trusted client certificates."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import shutil
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher
from argon2.exceptions import VerifyMismatchError
from asyncua import Client, ua
from asyncua.ua.uaerrors import (
    BadIdentityTokenRejected,
    BadNotWritable,
    BadUserAccessDenied,
    UaError,
)
from cryptography import x509

from mes.node import FarmNode
from mes.opcua.security import CERT_FILE, KEY_FILE, application_uri
from mes.state.ops import Op
from tests.auth import ADMIN_TOKEN
from tests.opcua_secured import (
    PASSWORD,
    POLICIES,
    call,
    client_certificate,
    connect,
    make_user,
    printer_node,
    secured_server,
)


async def _read_state(client: object, ns: int) -> str:
    printer = await printer_node(client, ns, "p1")  # type: ignore[arg-type]
    value: str = await (await printer.get_child(f"{ns}:State")).read_value()
    return value


async def _write_label(client: object, ns: int, value: str) -> ua.StatusCode:
    printer = await printer_node(client, ns, "p1")  # type: ignore[arg-type]
    label = await printer.get_child(f"{ns}:Label")
    try:
        await label.write_value(ua.DataValue(ua.Variant(value, ua.VariantType.String)))
    except UaError as exc:
        return ua.StatusCode(exc.code)  # type: ignore[attr-defined]
    return ua.StatusCode(ua.StatusCodes.Good)


async def test_farm_accounts_sign_in_by_password(node: FarmNode, api: httpx.AsyncClient,
                                                 tmp_path: Path) -> None:
    await make_user(api, "alice")
    await make_user(api, "gone")
    assert (await api.patch("/api/v1/users/gone", json={"disabled": True})).status_code == 200
    response = await api.post("/api/v1/users", json={"id": "nopass", "name": "nopass"})
    assert response.status_code == 201
    async with secured_server(node, tmp_path, ("p1",)) as secured:
        for login in ("alice", "ALICE"):  # names in any letter case
            async with connect(secured, login) as client:
                assert await _read_state(client, secured.ns) == "ready"
        refused = [("alice", "wrong password"), ("nobody", PASSWORD), ("gone", PASSWORD),
                   ("nopass", ""), ("nopass", PASSWORD)]
        for login, password in refused:
            with pytest.raises(BadUserAccessDenied):
                async with connect(secured, login, password):
                    pass


async def test_api_tokens_sign_in_as_passwords_and_refusals_say_why(
        node: FarmNode, api: httpx.AsyncClient, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    await make_user(api, "alice")
    made = await api.post("/api/v1/tokens", json={"name": "opc ua", "user_id": "alice"})
    assert made.status_code == 201, made.text
    alice_token, alice_token_id = made.json()["token"], made.json()["id"]
    async with secured_server(node, tmp_path, ("p1",)) as secured:
        # The first admin has a token and no password: the token is its OPC UA password.
        for login in ("admin", "ADMIN"):
            async with connect(secured, login, ADMIN_TOKEN) as client:
                assert await _read_state(client, secured.ns) == "ready"
        caplog.clear()
        with pytest.raises(BadUserAccessDenied):
            async with connect(secured, "admin", "s3cret-guess"):
                pass
        assert "the account has no password" in caplog.text
        assert "s3cret-guess" not in caplog.text  # the reason, never the secret
        async with connect(secured, "alice", alice_token) as client:
            assert await _read_state(client, secured.ns) == "ready"
        caplog.clear()
        with pytest.raises(BadUserAccessDenied):  # alice's token does not make her admin
            async with connect(secured, "admin", alice_token):
                pass
        assert "another user's" in caplog.text and alice_token not in caplog.text
        assert (await api.delete(f"/api/v1/tokens/{alice_token_id}")).status_code == 200
        caplog.clear()
        with pytest.raises(BadUserAccessDenied):
            async with connect(secured, "alice", alice_token):
                pass
        assert "revoked" in caplog.text
        caplog.clear()
        with pytest.raises(BadUserAccessDenied):
            async with connect(secured, "nobody", "x"):
                pass
        assert "no such user" in caplog.text


class IssuedTokenClient(Client):
    """An asyncua client that signs in with an IssuedIdentityToken (asyncua's own has no
    API for it): the "password" is the token, sent as the token's data."""

    def _add_user_auth(self, params: ua.ActivateSessionParameters, username: str,
                       password: str) -> None:
        policy = self.server_policy(ua.UserTokenType.IssuedToken)
        params.UserIdentityToken = ua.IssuedIdentityToken(
            PolicyId=policy.PolicyId, TokenData=password.encode())


async def test_an_issued_identity_token_signs_in_as_its_account(
        node: FarmNode, api: httpx.AsyncClient, tmp_path: Path) -> None:
    async with secured_server(node, tmp_path, ("p1",)) as secured:
        endpoints = await secured.server.get_endpoints()
        issued = [t for e in endpoints for t in e.UserIdentityTokens
                  if t.TokenType == ua.UserTokenType.IssuedToken]
        assert issued and {t.IssuedTokenType for t in issued} == {
            "http://opcfoundation.org/UA/UserToken#JWT"}

        async def session(token: str) -> IssuedTokenClient:
            client = IssuedTokenClient(secured.endpoint, timeout=10)
            client.application_uri = secured.client_uri
            await client.set_security(POLICIES["Basic256Sha256"], str(secured.cert),
                                      str(secured.key),
                                      mode=ua.MessageSecurityMode.SignAndEncrypt)
            client.set_user("token")
            client.set_password(token)
            return client

        async with await session(ADMIN_TOKEN) as client:
            assert await _read_state(client, secured.ns) == "ready"
        for wrong in ("mes_" + "x" * 40, "not a token"):
            with pytest.raises(BadUserAccessDenied):
                async with await session(wrong):
                    pass


async def test_password_check_runs_off_the_event_loop(node: FarmNode, api: httpx.AsyncClient,
                                                      tmp_path: Path) -> None:
    # A costly hash (the verification follows the parameters stored in it): checked on the
    # event loop, each wrong sign-in would hold the loop for its whole verification.
    costly = PasswordHasher(time_cost=20, memory_cost=65536).hash("right")
    created = await node.writer.submit(Op.USER_CREATE, {
        "id": "alice", "name": "alice", "role": "user", "password_hash": costly})
    assert created.ok, created.error
    check = time.monotonic()
    with pytest.raises(VerifyMismatchError):
        await asyncio.to_thread(PasswordHasher().verify, costly, "wrong")
    verification = time.monotonic() - check
    async with secured_server(node, tmp_path, ("p1",)) as secured:
        gaps: list[float] = []

        async def ticker() -> None:
            last = time.monotonic()
            while True:
                await asyncio.sleep(0.005)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        task = asyncio.create_task(ticker())
        try:
            for _ in range(3):
                with pytest.raises(BadUserAccessDenied):
                    async with connect(secured, "alice", "wrong"):
                        pass
        finally:
            task.cancel()
        # The loop kept turning: no gap near one verification (a collector pause or the
        # client's own RSA work on a busy machine stays well below it).
        assert max(gaps) < verification / 2, (max(gaps), verification)


async def test_anonymous_and_security_none_refused_by_default(
        node: FarmNode, api: httpx.AsyncClient, tmp_path: Path) -> None:
    async with secured_server(node, tmp_path, ("p1",)) as secured:
        endpoints = await secured.server.get_endpoints()
        modes = {e.SecurityMode for e in endpoints}
        assert ua.MessageSecurityMode.None_ not in modes
        tokens = {t.TokenType for e in endpoints for t in e.UserIdentityTokens}
        assert tokens == {ua.UserTokenType.UserName, ua.UserTokenType.IssuedToken}
        with pytest.raises(BadIdentityTokenRejected):
            async with connect(secured):  # encrypted, but anonymous
                pass
        with pytest.raises((UaError, OSError, asyncio.TimeoutError)):
            async with connect(secured, "admin", policy=None):
                pass


async def test_anonymous_allowed_is_read_only(node: FarmNode, api: httpx.AsyncClient,
                                              tmp_path: Path) -> None:
    await make_user(api, "olga", "operator")
    assert (await api.post("/api/v1/printers", json={"id": "p1"})).status_code == 201
    async with secured_server(node, tmp_path, ("p1",), opcua_allow_anonymous=True) as secured:
        async with connect(secured, policy=None) as client:
            assert await _read_state(client, secured.ns) == "ready"
            assert (await _write_label(client, secured.ns, "x")).name == "BadUserAccessDenied"
            farm = await client.nodes.objects.get_child(f"{secured.ns}:PrintFarm")
            result = await call(farm, secured.ns, "SubmitJob",
                                ua.Variant("pla"), ua.Variant(5, ua.VariantType.UInt32),
                                ua.Variant(""), ua.Variant(""), ua.Variant(""))
            assert result.StatusCode.name == "BadUserAccessDenied"
        async with connect(secured, policy="Basic256Sha256") as client:  # anonymous, encrypted
            printer = await printer_node(client, secured.ns, "p1")
            assert (await call(printer, secured.ns, "ClearBed")).StatusCode.name == \
                "BadUserAccessDenied"
        # an operator's password in clear on an unsigned channel: refused, not anonymous
        with pytest.raises((BadUserAccessDenied, BadIdentityTokenRejected, UaError)):
            async with _plaintext_session(secured, "olga"):
                pass
        async with connect(secured, "olga") as client:
            printer = await printer_node(client, secured.ns, "p1")
            assert (await call(printer, secured.ns, "ClearBed")).StatusCode.is_good()


async def test_writes_are_decided_per_user_and_node(node: FarmNode, api: httpx.AsyncClient,
                                                    tmp_path: Path) -> None:
    await make_user(api, "alice")
    await make_user(api, "olga", "operator")
    await make_user(api, "adam", "admin")

    def label_for_staff(who: object, nodeid: ua.NodeId) -> bool:
        return str(nodeid.Identifier).endswith("/Label")

    async with secured_server(node, tmp_path, ("p1",)) as secured:
        for login in ("alice", "olga", "adam"):  # default policy: nothing is writable
            async with connect(secured, login) as client:
                assert (await _write_label(client, secured.ns, "x")).name == \
                    "BadUserAccessDenied"
    async with secured_server(node, tmp_path, ("p1",), label_for_staff) as secured:
        async with connect(secured, "alice") as client:  # the policy is for staff only
            assert (await _write_label(client, secured.ns, "x")).name == "BadUserAccessDenied"
            printer = await printer_node(client, secured.ns, "p1")
            with pytest.raises(BadNotWritable):  # read-only whoever writes
                await (await printer.get_child(f"{secured.ns}:State")).write_value("error")
        async with connect(secured, "olga") as client:
            assert (await _write_label(client, secured.ns, "by olga")).is_good()
            printer = await printer_node(client, secured.ns, "p1")
            label = await printer.get_child(f"{secured.ns}:Label")
            assert await label.read_value() == "by olga"
            state = await printer.get_child(f"{secured.ns}:State")
            with pytest.raises(BadNotWritable):  # State is read-only (its AccessLevel)
                await state.write_value("error")
            with pytest.raises(BadNotWritable):  # and so is every attribute but the Value
                await label.write_attribute(ua.AttributeIds.Description, ua.DataValue(
                    ua.Variant(ua.LocalizedText("mine"), ua.VariantType.LocalizedText)))
            assert await state.read_value() == "ready"


@pytest.mark.parametrize(("policy", "mode"), [
    ("Basic256Sha256", ua.MessageSecurityMode.Sign),
    ("Aes128_Sha256_RsaOaep", ua.MessageSecurityMode.SignAndEncrypt),
    ("Aes256_Sha256_RsaPss", ua.MessageSecurityMode.SignAndEncrypt),
    ("Aes256_Sha256_RsaPss", ua.MessageSecurityMode.Sign),
])
async def test_other_security_policies(node: FarmNode, api: httpx.AsyncClient, tmp_path: Path,
                                       policy: str, mode: ua.MessageSecurityMode) -> None:
    await make_user(api, "alice")
    async with secured_server(node, tmp_path, ("p1",)) as secured, \
            connect(secured, "alice", policy=policy, mode=mode) as client:
        assert await _read_state(client, secured.ns) == "ready"


async def test_server_certificate_is_kept_across_restarts(
        node: FarmNode, api: httpx.AsyncClient, tmp_path: Path) -> None:
    await make_user(api, "alice")
    folder = node.settings.data_dir / "opcua"
    thumbprints = []
    for _ in range(2):
        async with secured_server(node, tmp_path, ("p1",)) as secured, \
                connect(secured, "alice") as client:
            endpoints = await client.get_endpoints()
            der = endpoints[0].ServerCertificate
            thumbprints.append(hashlib.sha1(der).hexdigest())
            uri = application_uri(node.settings.raft_self)
            assert {e.Server.ApplicationUri for e in endpoints} == {uri}
            cert = x509.load_der_x509_certificate(der)
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            assert san.get_values_for_type(x509.UniformResourceIdentifier) == [uri]
            assert der == (folder / CERT_FILE).read_bytes()
    assert thumbprints[0] == thumbprints[1]
    assert (folder / KEY_FILE).stat().st_mode & 0o777 == 0o600


async def test_the_certificate_names_the_hosts_clients_dial_ip_addresses_as_such(
        node: FarmNode, api: httpx.AsyncClient, tmp_path: Path) -> None:
    folder = node.settings.data_dir / "opcua"

    def names() -> tuple[list[str], list[str], bytes]:
        cert = x509.load_der_x509_certificate((folder / CERT_FILE).read_bytes())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        return (san.get_values_for_type(x509.DNSName),
                [str(ip) for ip in san.get_values_for_type(x509.IPAddress)],
                (folder / KEY_FILE).read_bytes())

    async with secured_server(node, tmp_path, ("p1",)):  # the endpoint's host, 127.0.0.1
        pass
    dns, ips, key = names()
    # An IP address, not a DNS name; and this machine's name, which asyncua looks for.
    assert (dns, ips) == ([socket.gethostname()], ["127.0.0.1"])
    given = "printfarm.lab.example, 192.0.2.7, ::1"
    async with secured_server(node, tmp_path, ("p1",), opcua_host_names=given):
        pass
    dns, ips, same_key = names()
    assert (dns, ips) == (["printfarm.lab.example"], ["192.0.2.7", "::1"])
    assert same_key == key  # a new certificate for the same key
    with pytest.raises(ValueError, match="OPCUA_HOST_NAMES"):
        node.settings.model_validate({**node.settings.model_dump(),
                                      "opcua_host_names": "opc.tcp://x/"})


async def test_trusted_client_certificates(node: FarmNode, api: httpx.AsyncClient,
                                           tmp_path: Path) -> None:
    await make_user(api, "alice")
    trusted = tmp_path / "trusted"
    other, _ = await client_certificate(tmp_path / "other", "urn:someone:else")
    trusted.mkdir()
    shutil.copy(other, trusted / "other.der")
    async with secured_server(node, tmp_path, ("p1",),
                              opcua_trusted_certs=str(trusted)) as secured:
        with pytest.raises(UaError) as refused:
            async with connect(secured, "alice"):
                pass
        assert type(refused.value).__name__ == "BadCertificateUntrusted"
    shutil.copy(secured.cert, trusted / "ours.der")
    async with secured_server(node, tmp_path, ("p1",),
                              opcua_trusted_certs=str(trusted)) as secured, \
            connect(secured, "alice") as client:
        assert await _read_state(client, secured.ns) == "ready"


def test_the_wrapped_asyncua_code_is_what_the_wrapper_expects() -> None:
    """The password check runs before asyncua's (sync) ActivateSession handling: fail loudly
    if an asyncua upgrade changes the code that wrapper relies on."""
    import inspect

    import asyncua
    from asyncua.server.internal_session import InternalSession

    from mes.opcua import security

    assert asyncua.__version__ == "2.1.0"
    process = inspect.getsource(security._original_process)
    assert "self.session.activate_session(params" in process
    assert "check_validity(user, typeid, body)" in process
    activate = inspect.getsource(InternalSession.activate_session)
    assert not inspect.iscoroutinefunction(InternalSession.activate_session)
    assert "self.iserver.user_manager.get_user(" in activate
    assert "self.iserver.decrypt_user_token(self, id_token)" in activate


@contextlib.asynccontextmanager
async def _plaintext_session(secured: Any, user: str) -> Any:
    """What the review did: a security None channel and a user-name token whose password
    is sent in clear, whatever endpoints the server offers."""
    client = Client(secured.endpoint, timeout=10)
    client.application_uri = secured.client_uri
    client.set_user(user)
    client.set_password(PASSWORD)
    client.server_policy = lambda _kind: ua.UserTokenPolicy(  # type: ignore[method-assign]
        PolicyId="username", TokenType=ua.UserTokenType.UserName, SecurityPolicyUri=None)
    # asyncua's client would stop at "no matching endpoint"; a hostile one does not
    original = Client.find_endpoint
    Client.find_endpoint = staticmethod(  # type: ignore[method-assign]
        lambda endpoints, _mode, _uri: endpoints[0])
    try:
        async with client:
            yield client
    finally:
        Client.find_endpoint = original  # type: ignore[method-assign]


@pytest.mark.parametrize("anonymous", [False, True])
async def test_a_password_in_clear_on_an_unencrypted_channel_is_refused(
        node: FarmNode, api: httpx.AsyncClient, tmp_path: Path, anonymous: bool,
        caplog: pytest.LogCaptureFixture) -> None:
    await make_user(api, "olga", "operator")
    async with secured_server(node, tmp_path, ("p1",),
                              opcua_allow_anonymous=anonymous) as secured:
        with pytest.raises((BadUserAccessDenied, BadIdentityTokenRejected, UaError)):
            async with _plaintext_session(secured, "olga"):
                pass
        assert "sent in clear" in caplog.text
        # the same account over an encrypted channel signs in
        async with connect(secured, "olga") as client:
            assert await _read_state(client, secured.ns) == "ready"
