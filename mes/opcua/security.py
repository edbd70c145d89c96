"""Security of the embedded OPC UA server: certificate, policies, users and permissions.

Decisions (see docs/opcua.md):

- The server's key and self-signed certificate live in DATA_DIR/opcua/ and are made on
  the first start only; the certificate is renewed (same key) when it expires or when the
  node's ApplicationUri or host name changes.
- Endpoints: Basic256Sha256, Aes128_Sha256_RsaOaep and Aes256_Sha256_RsaPss, each with Sign
  and SignAndEncrypt. Security None and anonymous sessions only with OPCUA_ALLOW_ANONYMOUS,
  and then read-only: a session on a None channel never acts as its user.
- Sessions sign in with the user name (or id) and password of a farm account, or one of
  its API tokens as the password or as an IssuedIdentityToken (JWT policy: a mes token or
  an OpenID Connect JWT the node accepts). Remote users
  get asyncua's `UserRole.User`, never `Admin` (which bypasses every check). A password
  sent in clear (not encrypted for the server, on a channel without encryption) is refused
  without being checked, whether or not anonymous access is allowed.
- Reads: a job's owner and file name only for operators, admins and the job's owner
  (mes/opcua/privacy.py); a session on a None channel reads as anonymous there too.
- Writes: anonymous sessions are refused whole write requests; for accounts every node is
  decided alone: Bad_NotWritable for a node (or attribute) that is read-only, and for the
  writable ones a `WritePolicy` for operators and admins (default: nothing is writable,
  the farm changes through methods only), Bad_UserAccessDenied otherwise. The server's own
  writes pass.
- Client certificates: OPCUA_TRUSTED_CERTS names a directory of trusted certificates
  (DER or PEM; a CA there trusts what it signed); empty accepts any client certificate.
"""

from __future__ import annotations

import contextvars
import dataclasses
import ipaddress
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from asyncua import Server, ua
from asyncua.common.utils import ServiceError
from asyncua.crypto import cert_gen
from asyncua.crypto.permission_rules import USER_TYPES, SimpleRoleRuleset, User, UserRole
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from asyncua.server.uaprocessor import UaProcessor
from asyncua.ua.ua_binary import struct_from_binary
from asyncua.ua.uaerrors import UaError
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from mes.auth.principal import Principal
from mes.config import ConfigError
from mes.config_groups import OpcuaSettings
from mes.opcua.logins import shown_login
from mes.opcua.privacy import guard_sessions
from mes.opcua.triggering import TriggeringRefused, set_triggering

log = logging.getLogger(__name__)

PasswordCheck = Callable[[str, str], Awaitable[Principal | None]]
# Whether `principal` may write the Value of the node (operators and admins only ask).
WritePolicy = Callable[[Principal, ua.NodeId], bool]

SECURE_POLICIES = [
    ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
    ua.SecurityPolicyType.Basic256Sha256_Sign,
    ua.SecurityPolicyType.Aes256Sha256RsaPss_SignAndEncrypt,
    ua.SecurityPolicyType.Aes256Sha256RsaPss_Sign,
    ua.SecurityPolicyType.Aes128Sha256RsaOaep_SignAndEncrypt,
    ua.SecurityPolicyType.Aes128Sha256RsaOaep_Sign,
]
KEY_FILE = "server_key.pem"
CERT_FILE = "server_cert.der"
PRODUCT_URI = "urn:mes-printfarm:mes"

_ACTIVATE = ua.NodeId(ua.ObjectIds.ActivateSessionRequest_Encoding_DefaultBinary)
_WRITE_TYPES = frozenset(ua.NodeId(i) for i in (
    ua.ObjectIds.WriteRequest_Encoding_DefaultBinary,
    ua.ObjectIds.HistoryUpdateRequest_Encoding_DefaultBinary))
_BROWSE_NEXT = ua.NodeId(ua.ObjectIds.BrowseNextRequest_Encoding_DefaultBinary)
_CANCEL = ua.NodeId(ua.ObjectIds.CancelRequest_Encoding_DefaultBinary)
_SET_TRIGGERING = ua.NodeId(ua.ObjectIds.SetTriggeringRequest_Encoding_DefaultBinary)
_SESSION_TYPES = frozenset(ua.NodeId(i) for i in USER_TYPES) | {_BROWSE_NEXT, _CANCEL,
                                                               _SET_TRIGGERING}
# RegisterServer(2): asyncua serves them without a session, so anyone on the network could
# add a server of theirs to what FindServers answers. We are no discovery server.
_REGISTER_SERVER = frozenset(ua.NodeId(i) for i in (
    ua.ObjectIds.RegisterServerRequest_Encoding_DefaultBinary,
    ua.ObjectIds.RegisterServer2Request_Encoding_DefaultBinary))

_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "opcua_principal", default=None)
# The outcome of the password check of the ActivateSession being processed (see _activate).
_checked: contextvars.ContextVar[tuple[str, str | None, Principal | None] | None] = (
    contextvars.ContextVar("opcua_checked", default=None))


def current_principal() -> Principal | None:
    """The user of the session whose request is being served (None: anonymous).

    Valid inside `async` method handlers; sync handlers run in a thread pool and lose it.
    """
    return _principal.get()


def application_uri(raft_address: str) -> str:
    """The OPC UA ApplicationUri of the node whose Raft address is `raft_address`."""
    return f"urn:mes:node:{raft_address}"


@dataclass
class FarmUser(User):  # type: ignore[misc]
    """An asyncua user that carries the farm account it signed in as."""

    principal: Principal | None = None


class FarmUserManager:
    """asyncua's user manager: the password was checked (off the loop) just before."""

    def __init__(self, allow_anonymous: bool) -> None:
        self.allow_anonymous = allow_anonymous

    def get_user(self, iserver: Any, username: str | None = None, password: str | None = None,
                 certificate: Any = None) -> User | None:
        """The session's user, or None to refuse it (BadUserAccessDenied)."""
        checked = _checked.get()
        if username is None and checked is not None and checked[0] == _ISSUED:
            who = checked[2]  # an IssuedIdentityToken, checked just before
            return None if who is None else FarmUser(role=UserRole.User, name=who.name,
                                                      principal=who)
        if username is None:
            return FarmUser(role=UserRole.Anonymous) if self.allow_anonymous else None
        if checked is None or checked[:2] != (username, password):
            return None
        principal = checked[2]
        if principal is None:
            return None
        return FarmUser(role=UserRole.User, name=principal.name, principal=principal)


class FarmRuleset(SimpleRoleRuleset):  # type: ignore[misc]
    """Which requests a session may make; records its user for the method handlers.

    `read_only` (security None channels): every session acts as anonymous.
    """

    def __init__(self, read_only: bool = False) -> None:
        super().__init__()
        self.read_only = read_only

    def check_validity(self, user: Any, action_type_id: Any, body: Any) -> bool:
        """True when `user` may make a request of this type."""
        principal = user.principal if isinstance(user, FarmUser) else None
        if self.read_only:
            principal = None
        _principal.set(principal)
        if action_type_id not in _SESSION_TYPES:
            return False  # AddNodes and the like: never for remote sessions
        if action_type_id in _WRITE_TYPES:
            # Any account (each node is then decided by `_wrap_writes`); never anonymous.
            return principal is not None
        return user.role in (UserRole.User, UserRole.Anonymous)


def _wrap_writes(server: Server, writable: WritePolicy) -> None:
    """Per-user, per-node decision on every remote write (the server's own writes pass)."""
    service = server.iserver.attribute_service
    original = service.write

    async def write(params: ua.WriteParameters,
                    user: User = User(role=UserRole.Admin)) -> list[ua.StatusCode]:  # noqa: B008
        if user.role == UserRole.Admin:
            own: list[ua.StatusCode] = await original(params, user)
            return own
        principal = user.principal if isinstance(user, FarmUser) else None
        results: list[ua.StatusCode] = []
        for item in params.NodesToWrite:
            refusal = _write_refusal(server, item, principal, writable)
            if refusal is not None:
                results.append(ua.StatusCode(refusal))
                continue
            one = ua.WriteParameters(NodesToWrite=[item])
            results.extend(await original(one, user))
        return results

    service.write = write


def _write_refusal(server: Server, item: ua.WriteValue, principal: Principal | None,
                   writable: WritePolicy) -> int | None:
    """Why a remote write of one node is refused (None: it is not): Bad_NodeIdUnknown,
    Bad_NotWritable for anything but the Value of a node whose AccessLevel allows writing,
    Bad_UserAccessDenied when this user may not write it."""
    if item.NodeId not in server.iserver.aspace:
        return int(ua.StatusCodes.BadNodeIdUnknown)
    if item.AttributeId != ua.AttributeIds.Value:
        return int(ua.StatusCodes.BadNotWritable)
    level = server.iserver.aspace.read_attribute_value(item.NodeId, ua.AttributeIds.AccessLevel)
    bits = level.Value.Value if level.Value is not None else 0
    if not (bits or 0) & ua.AccessLevel.CurrentWrite.mask:
        return int(ua.StatusCodes.BadNotWritable)
    if principal is None or not principal.staff or not writable(principal, item.NodeId):
        return int(ua.StatusCodes.BadUserAccessDenied)
    return None


_original_process = UaProcessor._process_message


async def _activate(self: UaProcessor, typeid: Any, requesthdr: Any, seqhdr: Any,
                    body: Any) -> Any:
    """UaProcessor._process_message, with the password of an ActivateSession checked first.

    asyncua asks the user manager synchronously; argon2 takes ~0.2 s, so the check runs
    here, off the event loop, and the user manager reads its outcome from a contextvar.
    """
    if typeid == _BROWSE_NEXT:  # asyncua answers it BadServiceUnsupported
        return await _browse_next(self, typeid, requesthdr, seqhdr, body)
    if typeid == _CANCEL:  # likewise
        return await _cancel(self, typeid, requesthdr, seqhdr, body)
    if typeid == _SET_TRIGGERING:  # likewise
        return await _set_triggering(self, typeid, requesthdr, seqhdr, body)
    if typeid in _REGISTER_SERVER:
        log.warning("OPC UA: refused a RegisterServer request (this is no discovery server)")
        fault = ua.ServiceFault()
        fault.ResponseHeader.ServiceResult = ua.StatusCode(ua.StatusCodes.BadServiceUnsupported)
        self.send_response(requesthdr.RequestHandle, seqhdr, fault)
        return True
    check: PasswordCheck | None = getattr(self.iserver, "mes_password_check", None)
    if check is not None and typeid == _ACTIVATE:
        _checked.set(None)
        try:
            params = struct_from_binary(ua.ActivateSessionParameters, body.copy())
            token = params.UserIdentityToken
            session = self.session or self.iserver.lookup_external_session(
                requesthdr.AuthenticationToken)
            if isinstance(token, ua.UserNameIdentityToken) and not _secret_kept(self, token):
                # A password in clear on an unencrypted channel: refused, never checked.
                log.warning("OPC UA: refused a user name and password sent in clear on a "
                            "channel without encryption (user %r)", shown_login(token.UserName))
                _checked.set((_REFUSED, None, None))
            elif isinstance(token, ua.UserNameIdentityToken) and session is not None:
                username, password = self.iserver.decrypt_user_token(session, token)
                if isinstance(username, str) and isinstance(password, str | None):
                    who = await check(username, password or "")
                    _checked.set((username, password, who))
            elif isinstance(token, ua.IssuedIdentityToken):
                _checked.set((_ISSUED, None, None))  # refused unless the check proves someone
                if session is not None:
                    _checked.set((_ISSUED, None,
                                  await _check_issued(self, session, token, check)))
        except (ServiceError, UaError, ValueError, UnicodeDecodeError):
            log.debug("OPC UA session activation: unreadable user token", exc_info=True)
        except Exception:
            log.exception("OPC UA password check failed; the session is refused")
    try:
        answer = await _original_process(self, typeid, requesthdr, seqhdr, body)
    finally:
        if typeid == _ACTIVATE:
            _checked.set(None)  # the secret is not kept beyond its activation
    if (check is not None and typeid == _ACTIVATE
            and _channel_mode(self) == ua.MessageSecurityMode.None_):
        _as_anonymous(self.session)
    return answer


def _checked_session(processor: UaProcessor, typeid: ua.NodeId, body: Any) -> Any:
    """The processor's activated session, allowed to make this request (as asyncua checks
    every request of a session); a ServiceError otherwise."""
    session = processor.session
    if session is None or not session.is_activated():
        raise ServiceError(ua.StatusCodes.BadSessionNotActivated)
    rules = processor._connection.security_policy.permissions
    if rules is not None and rules.check_validity(session.user, typeid, body) is False:
        raise ServiceError(ua.StatusCodes.BadUserAccessDenied)
    session.touch()
    return session


async def _cancel(processor: UaProcessor, typeid: ua.NodeId, requesthdr: Any, seqhdr: Any,
                  body: Any) -> bool:
    """Cancel (Part 4, 5.7.5): the Publish requests of this connection still waiting with
    that RequestHandle are answered Bad_RequestCancelledByClient (every other request is
    answered as it arrives: nothing else waits to be cancelled)."""
    _checked_session(processor, typeid, body)
    params = struct_from_binary(ua.CancelParameters, body)
    waiting = [r for r in processor._publish_requests
               if r.requesthdr.RequestHandle == params.RequestHandle]
    for request in waiting:
        processor._publish_requests.remove(request)
        fault = ua.ServiceFault()
        fault.ResponseHeader.ServiceResult = ua.StatusCode(
            ua.StatusCodes.BadRequestCancelledByClient)
        processor.send_response(request.requesthdr.RequestHandle, request.seqhdr, fault)
    response = ua.CancelResponse()
    response.Parameters.CancelCount = len(waiting)
    processor.send_response(requesthdr.RequestHandle, seqhdr, response)
    return True


async def _set_triggering(processor: UaProcessor, typeid: ua.NodeId, requesthdr: Any,
                          seqhdr: Any, body: Any) -> bool:
    """SetTriggering, checked as asyncua checks every request of a session, served by
    mes.opcua.triggering for the session's own subscriptions."""
    session = _checked_session(processor, typeid, body)
    params = struct_from_binary(ua.SetTriggeringParameters, body)
    try:
        result = set_triggering(session.subscription_service.subscriptions,
                                session.session_id, params)
    except TriggeringRefused as refused:
        raise ServiceError(refused.code) from None
    response = ua.SetTriggeringResponse()
    response.Parameters = result
    processor.send_response(requesthdr.RequestHandle, seqhdr, response)
    return True


async def _browse_next(processor: UaProcessor, typeid: ua.NodeId, requesthdr: Any,
                       seqhdr: Any, body: Any) -> bool:
    """BrowseNext, checked as asyncua checks every request of a session, served by the
    session's continuation points (mes.opcua.continuation)."""
    session = _checked_session(processor, typeid, body)
    params = struct_from_binary(ua.BrowseNextParameters, body)
    if not hasattr(session, "continuation_points"):  # not a remote session of ours
        raise ServiceError(ua.StatusCodes.BadServiceUnsupported)
    response = ua.BrowseNextResponse()
    response.Parameters.Results = await session.browse_next(params)
    processor.send_response(requesthdr.RequestHandle, seqhdr, response)
    return True


UaProcessor._process_message = _activate
# What the user manager sees for a refused user-name token: no user name matches it.
_REFUSED = "\x00refused"
# ... and for an IssuedIdentityToken (checked as a token given as a password).
_ISSUED = "\x00issued"
JWT_TOKEN_TYPE = "http://opcfoundation.org/UA/UserToken#JWT"


async def _check_issued(processor: UaProcessor, session: Any, token: ua.IssuedIdentityToken,
                        check: PasswordCheck) -> Principal | None:
    """The account an IssuedIdentityToken (a mes API token or an accepted OpenID Connect
    JWT) proves, or None; never read when it travelled unprotected."""
    carrier = ua.UserNameIdentityToken(UserName="", Password=token.TokenData,
                                       EncryptionAlgorithm=token.EncryptionAlgorithm)
    if not _secret_kept(processor, carrier):
        log.warning("OPC UA: refused an issued token sent in clear on a channel without "
                    "encryption")
        return None
    _, secret = processor.iserver.decrypt_user_token(session, carrier)
    if not isinstance(secret, str) or not secret:
        return None
    return await check("", secret)


def _offer_issued_tokens(server: Server) -> None:
    """Endpoints with encryption also offer an IssuedToken (JWT) user token policy: asyncua
    offers only anonymous, user name and certificate ones."""
    make = server._set_endpoints

    def set_endpoints(policy: Any, mode: ua.MessageSecurityMode, level: int) -> None:
        make(policy, mode, level)
        if mode == ua.MessageSecurityMode.None_:
            return  # a token there would travel in clear, and None sessions are read-only
        issued = ua.UserTokenPolicy(
            PolicyId="issued", TokenType=ua.UserTokenType.IssuedToken,
            IssuedTokenType=JWT_TOKEN_TYPE,
            # Sign only: encrypted for the server with the channel's policy.
            SecurityPolicyUri=(policy.URI if mode == ua.MessageSecurityMode.Sign
                               else "http://opcfoundation.org/UA/SecurityPolicy#None"))
        server.iserver.endpoints[-1].UserIdentityTokens.append(issued)

    server._set_endpoints = set_endpoints


def _channel_mode(processor: UaProcessor) -> Any:
    return getattr(processor._connection.security_policy, "Mode", None)


def _secret_kept(processor: UaProcessor, token: ua.UserNameIdentityToken) -> bool:
    """Whether a user-name token's password travelled protected: on a SignAndEncrypt
    channel, or encrypted for the server (its EncryptionAlgorithm set)."""
    return (_channel_mode(processor) == ua.MessageSecurityMode.SignAndEncrypt
            or bool(token.EncryptionAlgorithm))


def _as_anonymous(session: Any) -> None:
    """A session activated on a security None channel keeps no farm account (as
    `FarmRuleset.read_only` makes its requests anonymous, its reads are too)."""
    user = getattr(session, "user", None)
    if isinstance(user, FarmUser) and user.principal is not None:
        session.user = dataclasses.replace(user, principal=None)


def certificate_names(settings: OpcuaSettings) -> tuple[list[str], list[str]]:
    """The DNS names and IP addresses the server's certificate names: OPCUA_HOST_NAMES,
    or else the endpoint's host (this machine's name when it listens on every address),
    each IP address as an IP address (clients check it against the host they dialled)."""
    host = urlsplit(settings.endpoint).hostname or ""
    # This machine's name as well, unless the names are given: asyncua checks for it (and
    # logs a warning at every start without it), and clients may dial it.
    given = list(settings.host_names) or list(dict.fromkeys(
        [socket.gethostname()] if host in ("", "0.0.0.0", "::") else [host,
                                                                      socket.gethostname()]))
    dns: list[str] = []
    ips: list[str] = []
    for name in given:
        try:
            ips.append(str(ipaddress.ip_address(name.strip("[]"))))
        except ValueError:
            dns.append(name)
    return dns, ips


def _alt_names(uri: str, dns: list[str], ips: list[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(uri)]
    names += [x509.DNSName(name) for name in dns]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    return names


def _still_good(cert: x509.Certificate, wanted: list[x509.GeneralName]) -> bool:
    """Whether the kept certificate is valid now and names exactly `wanted`."""
    now = datetime.now(UTC)
    if not cert.not_valid_before_utc <= now < cert.not_valid_after_utc - timedelta(days=1):
        return False
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    return sorted(map(repr, names)) == sorted(map(repr, wanted))


async def load_or_make_certificate(server: Server, settings: OpcuaSettings) -> Path:
    """Load the server's key and certificate from DATA_DIR/opcua/, made there on first use;
    the certificate (not the key) is made again when it expires or its names change.

    Returns the certificate's path.
    """
    folder = settings.data_dir / "opcua"
    folder.mkdir(parents=True, exist_ok=True)
    key_path, cert_path = folder / KEY_FILE, folder / CERT_FILE
    uri = application_uri(settings.raft_self)
    dns, ips = certificate_names(settings)
    wanted = _alt_names(uri, dns, ips)
    if key_path.is_file():
        key = await cert_gen.load_private_key(key_path)
    else:
        key = cert_gen.generate_private_key()
        key_path.write_bytes(cert_gen.dump_private_key_as_pem(key))
    os.chmod(key_path, 0o600)
    keep = False
    if cert_path.is_file():
        kept = await cert_gen.load_certificate(cert_path)
        keep = _still_good(kept, wanted) and kept.public_key() == key.public_key()
    if not keep:
        subject = {"organizationName": "mes print farm", "countryName": "AU"}
        cert = cert_gen.generate_self_signed_app_certificate(
            key, uri, subject, wanted,
            extended=[ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
            days=365)
        cert_path.write_bytes(cert.public_bytes(Encoding.DER))
        log.info("OPC UA certificate made for %s", ", ".join([uri, *dns, *ips]))
    await server.load_certificate(str(cert_path))
    await server.load_private_key(str(key_path))
    return cert_path


async def _trust(server: Server, folder: str) -> None:
    path = Path(folder)
    if not path.is_dir():
        raise ConfigError(f"OPCUA_TRUSTED_CERTS: {folder} is not a directory")
    store = TrustStore([path], [])
    await store.load()
    options = (CertificateValidatorOptions.TIME_RANGE | CertificateValidatorOptions.URI
               | CertificateValidatorOptions.TRUSTED)
    server.set_certificate_validator(CertificateValidator(options, store))


def _none_read_only(server: Server) -> None:
    """Make sessions on security None channels anonymous, whoever signs in there."""
    setup = server._setup_server_nodes

    async def setup_then_restrict() -> None:
        await setup()
        for factory in server._policies:
            if factory.mode == ua.MessageSecurityMode.None_:
                factory.permission_ruleset = FarmRuleset(read_only=True)

    server._setup_server_nodes = setup_then_restrict


async def secure(server: Server, settings: OpcuaSettings, check_password: PasswordCheck,
                 writable: WritePolicy | None = None) -> None:
    """Secure `server` as the module docstring says.

    Call after `await server.init()` and before `await server.start()`.
    """
    await load_or_make_certificate(server, settings)
    await server.set_application_uri(application_uri(settings.raft_self))
    server.product_uri = PRODUCT_URI
    anonymous = settings.allow_anonymous
    policies = list(SECURE_POLICIES)
    if anonymous:
        policies.append(ua.SecurityPolicyType.NoSecurity)
        _none_read_only(server)
    server.set_security_policy(policies, permission_ruleset=FarmRuleset())
    tokens: list[type] = [ua.UserNameIdentityToken, ua.IssuedIdentityToken]
    if anonymous:
        tokens.append(ua.AnonymousIdentityToken)
    server.set_identity_tokens(tokens)
    _offer_issued_tokens(server)
    server.allow_remote_admin(False)
    server.iserver.set_user_manager(FarmUserManager(anonymous))
    server.iserver.mes_password_check = check_password
    guard_sessions(server)
    _wrap_writes(server, writable or (lambda _who, _node: False))
    if settings.trusted_certs:
        await _trust(server, settings.trusted_certs)
