"""OpenID Connect bearer JWTs, verified against a JWKS the test generates and serves on loopback."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from mes.auth.oidc import OidcError, OidcIdentity, OidcVerifier, looks_like_jwt, verifier_from
from mes.config import ConfigError, load_settings
from tests.ports import free_port

ISSUER = "https://login.example.test/"
AUDIENCE = "https://mes.example.test/api"
ROLE_CLAIM = "https://mes.example.test/roles"  # Auth0-style namespaced claim, dots and all


class Keys:
    """The provider's signing keys: two RSA (for rotation), one EC, and an impostor."""

    rsa1 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa2 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec1 = ec.generate_private_key(ec.SECP256R1())
    impostor = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwk(key: Any, kid: str, alg: str) -> dict[str, Any]:
    algorithm = RSAAlgorithm if alg.startswith("RS") else ECAlgorithm
    data: dict[str, Any] = algorithm.to_jwk(key.public_key(), as_dict=True)
    return {**data, "kid": kid, "alg": alg, "use": "sig"}


def jwks(*keys: dict[str, Any]) -> dict[str, Any]:
    return {"keys": list(keys)}


RSA1 = jwk(Keys.rsa1, "rsa-1", "RS256")
RSA2 = jwk(Keys.rsa2, "rsa-2", "RS256")
EC1 = jwk(Keys.ec1, "ec-1", "ES256")


class QuietServer(ThreadingHTTPServer):
    """A server that does not print a client's hang-up (the slow-provider test hangs up)."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


class JwksServer:
    """A JWKS endpoint on 127.0.0.1 that counts its requests; what it answers can change."""

    def __init__(self) -> None:
        self.document: Any = jwks(RSA1, EC1)
        self.status = 200
        self.requests = 0
        self.hold: threading.Event | None = None  # when set, answers wait for it
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.requests += 1
                if owner.hold is not None:
                    owner.hold.wait(10)
                body = json.dumps(owner.document).encode() if owner.status == 200 else b"{}"
                self.send_response(owner.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/.well-known/jwks.json"
        self.httpd = QuietServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,),
                                       daemon=True)
        self.thread.start()

    def stop(self) -> None:
        if self.hold is not None:
            self.hold.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)


@pytest.fixture
def provider() -> Iterator[JwksServer]:
    server = JwksServer()
    yield server
    server.stop()


class Clock:
    """A monotonic clock the test moves, for the refresh rate limit."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def verifier(provider: JwksServer, clock: Clock | None = None, **kw: Any) -> OidcVerifier:
    return OidcVerifier(ISSUER, AUDIENCE, provider.url, kw.pop("role_claim", ROLE_CLAIM),
                        clock=clock or Clock(), **kw)


@dataclass(frozen=True)
class In:
    """A time claim relative to when the token is made (parameters are made long before)."""

    seconds: int


def token(key: Any = Keys.rsa1, kid: str | None = "rsa-1", alg: str = "RS256",
          **claims: Any) -> str:
    """A signed token with good claims; a claim given as None is left out, one given as
    `In(seconds)` is that long from now."""
    now = int(time.time())
    payload = {"iss": ISSUER, "aud": AUDIENCE, "sub": "auth0|alice", "iat": now,
               "exp": now + 300, "email": "alice@example.test", "name": "Alice",
               ROLE_CLAIM: ["operator"], **claims}
    payload = {k: now + v.seconds if isinstance(v, In) else v
               for k, v in payload.items() if v is not None}
    headers = {"kid": kid} if kid is not None else {}
    return jwt.encode(payload, key, algorithm=alg, headers=headers)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def refused(v: OidcVerifier, tok: str) -> str:
    with pytest.raises(OidcError) as info:
        await v.verify(tok)
    return info.value.reason


async def test_valid_token_gives_the_identity(provider: JwksServer) -> None:
    identity = await verifier(provider).verify(token())
    assert identity == OidcIdentity(subject="auth0|alice", email="alice@example.test",
                                    name="Alice", role="operator")
    assert provider.requests == 1


async def test_es256_token_and_audience_list_accepted(provider: JwksServer) -> None:
    tok = token(Keys.ec1, "ec-1", "ES256", aud=["https://other.example.test", AUDIENCE])
    assert (await verifier(provider).verify(tok)).subject == "auth0|alice"


async def test_expiry_within_leeway_accepted(provider: JwksServer) -> None:
    tok = token(exp=In(-10), nbf=In(10))
    assert (await verifier(provider, leeway=30).verify(tok)).subject == "auth0|alice"


@pytest.mark.parametrize(
    ("role_claim", "claims", "role"),
    [
        (ROLE_CLAIM, {ROLE_CLAIM: "admin"}, "admin"),
        (ROLE_CLAIM, {ROLE_CLAIM: ["user", "admin", "viewer"]}, "admin"),  # most privileged
        (ROLE_CLAIM, {ROLE_CLAIM: " Operator "}, "operator"),
        (ROLE_CLAIM, {ROLE_CLAIM: None}, None),  # claim absent
        (ROLE_CLAIM, {ROLE_CLAIM: "superuser"}, None),  # not one of ours
        (ROLE_CLAIM, {ROLE_CLAIM: ["viewer", 7]}, None),
        (ROLE_CLAIM, {ROLE_CLAIM: {"admin": True}}, None),
        ("realm_access.roles", {"realm_access": {"roles": ["offline", "user"]}}, "user"),
        ("realm_access.roles", {"realm_access": ["admin"]}, None),
        ("", {ROLE_CLAIM: "admin"}, None),  # no role claim configured
    ],
)
async def test_role_from_the_configured_claim(provider: JwksServer, role_claim: str,
                                              claims: dict[str, Any], role: str | None) -> None:
    identity = await verifier(provider, role_claim=role_claim).verify(token(**claims))
    assert identity.role == role


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"iss": "https://evil.example.test/"}, "wrong issuer"),
        ({"iss": ISSUER.rstrip("/")}, "wrong issuer"),
        ({"aud": "https://other.example.test"}, "wrong audience"),
        ({"exp": In(-120)}, "token expired"),
        ({"nbf": In(120)}, "not yet valid"),
        ({"iat": In(120)}, "not yet valid"),
        ({"sub": None}, "missing claim: sub"),
        ({"sub": ""}, "missing claim: sub"),
        ({"exp": None}, "missing claim: exp"),
        ({"aud": None}, "missing claim: aud"),
        ({"iss": None}, "missing claim: iss"),
    ],
)
async def test_bad_claims_refused(provider: JwksServer, claims: dict[str, Any],
                                  reason: str) -> None:
    assert await refused(verifier(provider), token(**claims)) == reason


async def test_unknown_kid_refused(provider: JwksServer) -> None:
    v = verifier(provider)
    assert await refused(v, token(Keys.rsa2, "rsa-2")) == "unknown signing key"
    assert provider.requests == 1


async def test_signature_by_another_key_under_a_known_kid_refused(provider: JwksServer) -> None:
    assert await refused(verifier(provider), token(Keys.impostor, "rsa-1")) == "bad signature"


async def test_tampered_payload_refused(provider: JwksServer) -> None:
    header, _, signature = token().split(".")
    forged = b64(json.dumps({"iss": ISSUER, "aud": AUDIENCE, "sub": "auth0|mallory",
                             "exp": int(time.time()) + 300}).encode())
    assert await refused(verifier(provider), f"{header}.{forged}.{signature}") == "bad signature"


async def test_key_of_another_type_than_the_algorithm_refused(provider: JwksServer) -> None:
    # An RS256 token naming the EC key: never verified with a key of the wrong kind.
    assert await refused(verifier(provider), token(Keys.rsa1, "ec-1")) == "bad signature"


async def test_alg_none_refused(provider: JwksServer) -> None:
    tok = jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "exp": time.time() + 60},
                     None, algorithm="none",  # type: ignore[arg-type]
                     headers={"kid": "rsa-1"})
    assert looks_like_jwt(tok)
    assert await refused(verifier(provider), tok) == "unsupported algorithm"
    assert provider.requests == 0  # refused before any key is looked up


async def test_hs256_with_the_public_key_as_secret_refused(provider: JwksServer) -> None:
    """The algorithm-confusion attack: HMAC keyed with the provider's public key."""
    pem = Keys.rsa1.public_key().public_bytes(serialization.Encoding.PEM,
                                              serialization.PublicFormat.SubjectPublicKeyInfo)
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}).encode())
    payload = b64(json.dumps({"iss": ISSUER, "aud": AUDIENCE, "sub": "auth0|mallory",
                              "exp": int(time.time()) + 300}).encode())
    mac = hmac.new(pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    assert await refused(verifier(provider), f"{header}.{payload}.{b64(mac)}") == (
        "unsupported algorithm")


@pytest.mark.parametrize("tok", ["garbage", "", "mes_0123456789abcdef", "a.b", "a.b.c.d",
                                 "eyJ.eyJ.abc", "e30.e30.", "x" * 20_000])
async def test_garbage_refused_as_malformed(provider: JwksServer, tok: str) -> None:
    v = verifier(provider)
    reason = await refused(v, tok)
    assert reason in ("malformed token", "unsupported algorithm")
    if tok != "e30.e30.":  # "{}.{}.": decodes, but names no algorithm
        assert reason == "malformed token"


def test_looks_like_jwt() -> None:
    assert looks_like_jwt(token())
    for text in ("mes_0123456789abcdef", "a.b", "a.b.c.d", "a b.c.d", "", "a.b.c=", "."):
        assert not looks_like_jwt(text), text


async def test_refused_algorithms_cannot_be_configured(provider: JwksServer) -> None:
    for algorithms in (["HS256"], ["RS256", "none"], []):
        with pytest.raises(ValueError):
            verifier(provider, algorithms=algorithms)


async def test_rotation_new_kid_fetched_after_rate_limit(provider: JwksServer) -> None:
    clock = Clock()
    v = verifier(provider, clock)
    assert (await v.verify(token())).subject == "auth0|alice"
    provider.document = jwks(RSA2)  # the provider rotates: rsa-2 in, rsa-1 out
    clock.now += 31
    assert (await v.verify(token(Keys.rsa2, "rsa-2"))).subject == "auth0|alice"
    assert provider.requests == 2
    # The key set is replaced: the retired key is gone (and not fetched for again at once).
    assert await refused(v, token()) == "unknown signing key"
    assert provider.requests == 2


async def test_unknown_kid_within_the_rate_limit_is_not_fetched(provider: JwksServer) -> None:
    clock = Clock()
    v = verifier(provider, clock)
    await v.verify(token())
    provider.document = jwks(RSA1, RSA2)
    clock.now += 10  # < 30 s since the last fetch
    assert await refused(v, token(Keys.rsa2, "rsa-2")) == "unknown signing key"
    assert provider.requests == 1
    clock.now += 21
    assert (await v.verify(token(Keys.rsa2, "rsa-2"))).subject == "auth0|alice"
    assert provider.requests == 2


async def test_flood_of_random_kids_fetches_at_most_once(provider: JwksServer) -> None:
    clock = Clock()
    v = verifier(provider, clock)
    # 50 concurrent good tokens on a cold cache: one fetch serves them all.
    identities = await asyncio.gather(*(v.verify(token()) for _ in range(50)))
    assert {i.subject for i in identities} == {"auth0|alice"}
    assert provider.requests == 1
    clock.now += 31
    flood = [token(Keys.impostor, f"kid-{secrets.token_hex(8)}") for _ in range(50)]
    results = await asyncio.gather(*(v.verify(t) for t in flood), return_exceptions=True)
    assert all(isinstance(r, OidcError) and r.reason == "unknown signing key" for r in results)
    for t in flood:  # and 50 more, one by one
        assert await refused(v, t) == "unknown signing key"
    assert provider.requests == 2
    assert (await v.verify(token())).subject == "auth0|alice"  # good tokens still pass
    assert provider.requests == 2


async def test_provider_down_refused_as_unavailable(tmp_path: Path) -> None:
    server = JwksServer()
    server.stop()  # nothing listens on its port any more
    v = OidcVerifier(ISSUER, AUDIENCE, server.url, clock=Clock())
    assert await refused(v, token()) == "signing keys unavailable"


@pytest.mark.parametrize("document", ["not json", {"keys": "x"}, {"nokeys": []},
                                      {"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "h"}]},
                                      jwks({**RSA1, "use": "enc"})])
async def test_unusable_key_set_refused_as_unavailable(provider: JwksServer,
                                                       document: Any) -> None:
    provider.document = document
    assert await refused(verifier(provider), token()) == "signing keys unavailable"


async def test_provider_error_then_recovery(provider: JwksServer) -> None:
    clock = Clock()
    v = verifier(provider, clock)
    provider.status = 500
    assert await refused(v, token()) == "signing keys unavailable"
    assert await refused(v, token()) == "signing keys unavailable"
    assert provider.requests == 1  # failures are rate-limited too
    provider.status = 200
    clock.now += 5  # after a failure the next try comes sooner than 30 s
    assert (await v.verify(token())).subject == "auth0|alice"
    assert provider.requests == 2


async def test_slow_provider_times_out(provider: JwksServer) -> None:
    provider.hold = threading.Event()
    v = verifier(provider, fetch_timeout=0.5)
    started = time.monotonic()
    assert await refused(v, token()) == "signing keys unavailable"
    assert time.monotonic() - started < 5
    provider.hold.set()


async def test_cached_keys_outlive_a_provider_outage(provider: JwksServer) -> None:
    clock = Clock()
    v = verifier(provider, clock, cache_ttl=600)
    await v.verify(token())
    provider.status = 503
    clock.now += 601  # the cache is old: fetched again, which fails; the old keys still serve
    assert (await v.verify(token())).subject == "auth0|alice"
    assert provider.requests == 2
    provider.status = 200
    provider.document = jwks(RSA2)
    clock.now += 5
    assert await refused(v, token()) == "unknown signing key"  # refreshed: rsa-1 retired
    assert provider.requests == 3


async def test_token_without_kid_uses_the_only_key(provider: JwksServer) -> None:
    provider.document = jwks(RSA1)
    assert (await verifier(provider).verify(token(kid=None))).subject == "auth0|alice"
    provider.document = jwks(RSA1, RSA2)
    assert await refused(verifier(provider), token(kid=None)) == "unknown signing key"


# --- configuration -------------------------------------------------------------------------

OIDC = {"oidc_issuer": ISSUER, "oidc_audience": AUDIENCE,
        "oidc_jwks_url": "https://login.example.test/.well-known/jwks.json"}


def settings(tmp_path: Path, **kw: Any) -> Any:
    return load_settings(_env_file=None, data_dir=tmp_path / "data", **kw)


@pytest.mark.parametrize("missing", [["oidc_audience"], ["oidc_issuer", "oidc_jwks_url"],
                                     ["oidc_jwks_url"]])
def test_partial_oidc_settings_refused(tmp_path: Path, missing: list[str]) -> None:
    given = {k: v for k, v in OIDC.items() if k not in missing}
    with pytest.raises(ConfigError) as info:
        settings(tmp_path, **given)
    message = str(info.value)
    assert "\n" not in message
    for name in OIDC:
        assert (name.upper() in message.split("missing:")[1]) == (name in missing)


def test_jwks_url_must_be_http(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="OIDC_JWKS_URL"):
        settings(tmp_path, **{**OIDC, "oidc_jwks_url": "file:///etc/jwks.json"})


def test_oidc_off_by_default_and_on_when_complete(tmp_path: Path) -> None:
    off = settings(tmp_path)
    assert not off.oidc_enabled and verifier_from(off) is None
    on = settings(tmp_path, **OIDC, oidc_role_claim="realm_access.roles")
    v = verifier_from(on)
    assert on.oidc_enabled and v is not None
    assert (v.issuer, v.audience, v.jwks_url, v.role_claim) == (
        ISSUER, AUDIENCE, OIDC["oidc_jwks_url"], "realm_access.roles")
    assert set(v.algorithms) == {"RS256", "ES256"}
