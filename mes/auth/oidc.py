"""OpenID Connect: verify bearer JWTs against the provider's published signing keys.

The provider's JWKS is fetched with httpx (never blocking the event loop), cached, and
fetched again when a token names a key id that is not in the cache, at most once per
`refresh_interval` seconds so that tokens with made-up key ids cannot hammer the provider.
Only asymmetric algorithms (RS256, ES256 by default) are accepted: never `none` and never
HMAC, whose secret would be the public key (the algorithm-confusion attack).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import jwt

if TYPE_CHECKING:
    from mes.config import Settings

log = logging.getLogger(__name__)

ROLES = ("admin", "operator", "user")  # most privileged first
DEFAULT_ALGORITHMS = ("RS256", "ES256")
_ASYMMETRIC = {f"{family}{bits}": kty for family, kty in (("RS", "RSA"), ("PS", "RSA"),
                                                          ("ES", "EC")) for bits in (256, 384, 512)}
_JWT_SHAPE = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")
MAX_TOKEN_LENGTH = 16_384
MAX_JWKS_BYTES = 1_000_000


_Key = tuple[jwt.PyJWK, str | None]  # a signing key and the one algorithm it is for, if fixed


class OidcError(Exception):
    """A bearer JWT is refused; `reason` is short and safe to show in a 401 answer."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class OidcIdentity:
    """Who a verified token speaks for. `role` is None when the token names no valid role."""

    subject: str
    email: str | None
    name: str | None
    role: str | None


def looks_like_jwt(token: str) -> bool:
    """True if `token` has the shape of a compact JWS: three base64url segments."""
    return len(token) <= MAX_TOKEN_LENGTH and _JWT_SHAPE.match(token) is not None


def _claim(claims: dict[str, Any], path: str) -> Any:
    """The claim named `path`, or, if there is none, the dotted path `a.b.c` into nested objects.

    A literal name is tried first: namespaced claims such as `https://mes.example/role`
    contain dots themselves.
    """
    if path in claims:
        return claims[path]
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def role_from(claims: dict[str, Any], role_claim: str | None) -> str | None:
    """The mes role a token's `role_claim` names (the most privileged one of a list), or None."""
    if not role_claim:
        return None
    value = _claim(claims, role_claim)
    values = value if isinstance(value, list) else [value]
    named = {v.strip().lower() for v in values if isinstance(v, str)}
    return next((role for role in ROLES if role in named), None)


def _text(claims: dict[str, Any], name: str) -> str | None:
    value = claims.get(name)
    return value if isinstance(value, str) and value else None


class OidcVerifier:
    """Verifies bearer JWTs issued by one OpenID Connect provider for one audience."""

    def __init__(self, issuer: str, audience: str, jwks_url: str, role_claim: str | None = None,
                 *, leeway: float = 30.0, algorithms: Collection[str] = DEFAULT_ALGORITHMS,
                 refresh_interval: float = 30.0, cache_ttl: float = 3600.0,
                 fetch_timeout: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        bad = [alg for alg in algorithms if alg not in _ASYMMETRIC]
        if bad or not algorithms:
            raise ValueError(f"only asymmetric algorithms can be allowed, not {bad or 'none'}")
        self.issuer = issuer
        self.audience = audience
        self.jwks_url = jwks_url
        self.role_claim = role_claim or None
        self.leeway = leeway
        self.algorithms = tuple(algorithms)
        self.refresh_interval = refresh_interval
        self.cache_ttl = cache_ttl
        self.fetch_timeout = fetch_timeout
        self._clock = clock
        self._keys: dict[str | None, _Key] = {}
        self._fetched_at: float | None = None  # last successful fetch
        self._tried_at: float | None = None  # last attempt, successful or not
        self._lock = asyncio.Lock()
        self.fetches = 0  # attempts so far, for logs and tests

    async def verify(self, token: str) -> OidcIdentity:
        """Check signature, iss, aud, exp, nbf and sub; raise OidcError with a short reason."""
        if not looks_like_jwt(token):
            raise OidcError("malformed token")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise OidcError("malformed token") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise OidcError("unsupported algorithm")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise OidcError("malformed token")
        key, key_alg = await self._key(kid)
        if key.key_type != _ASYMMETRIC[alg] or key_alg not in (alg, None):
            raise OidcError("bad signature")  # the key is not one for this algorithm
        claims = self._decode(token, key, alg)
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise OidcError("missing claim: sub")
        return OidcIdentity(subject=subject, email=_text(claims, "email"),
                            name=_text(claims, "name"), role=role_from(claims, self.role_claim))

    def _decode(self, token: str, key: jwt.PyJWK, alg: str) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token, key.key, algorithms=[alg], audience=self.audience, issuer=self.issuer,
                leeway=self.leeway, options={"require": ["exp", "iss", "aud", "sub"]})
        except jwt.InvalidSignatureError:
            raise OidcError("bad signature") from None
        except jwt.ExpiredSignatureError:
            raise OidcError("token expired") from None
        except jwt.ImmatureSignatureError:
            raise OidcError("not yet valid") from None
        except jwt.InvalidIssuerError:
            raise OidcError("wrong issuer") from None
        except jwt.InvalidAudienceError:
            raise OidcError("wrong audience") from None
        except jwt.MissingRequiredClaimError as exc:
            raise OidcError(f"missing claim: {exc.claim}") from None
        except jwt.InvalidAlgorithmError:
            raise OidcError("unsupported algorithm") from None
        except jwt.DecodeError:
            raise OidcError("malformed token") from None
        except (jwt.PyJWTError, TypeError, ValueError):
            raise OidcError("invalid token") from None
        return claims

    async def _key(self, kid: str | None) -> _Key:
        """The signing key `kid` names, fetching the key set when it is unknown or old."""
        now = self._clock()
        stale = self._fetched_at is None or now - self._fetched_at > self.cache_ttl
        if kid in self._keys and not stale:
            return self._keys[kid]
        async with self._lock:  # one fetch at a time; waiters see its result
            now = self._clock()
            stale = self._fetched_at is None or now - self._fetched_at > self.cache_ttl
            if kid not in self._keys or stale:
                if self._may_fetch(now):
                    await self._refresh(now)
                elif self._fetched_at is None:
                    raise OidcError("signing keys unavailable")
        key = self._keys.get(kid)
        if key is None and kid is None and len(self._keys) == 1:
            key = next(iter(self._keys.values()))  # no kid, and only one key to choose
        if key is None:
            if self._fetched_at is None:
                raise OidcError("signing keys unavailable")
            raise OidcError("unknown signing key")
        return key

    def _may_fetch(self, now: float) -> bool:
        if self._tried_at is None:
            return True
        # After a failure try again sooner, but still rate-limited.
        interval = (self.refresh_interval if self._tried_at == self._fetched_at
                    else min(self.refresh_interval, 5.0))
        return now - self._tried_at >= interval

    async def _refresh(self, now: float) -> None:
        """Fetch the key set; on failure keep any cached keys and log why."""
        self._tried_at = now
        self.fetches += 1
        try:
            keys = await self._fetch()
        except Exception as exc:  # any failure to get keys is "unavailable", never a 500
            log.warning("OIDC: cannot fetch signing keys from %s: %s", self.jwks_url,
                        str(exc) or type(exc).__name__)
            return
        self._keys = keys
        self._fetched_at = now
        log.info("OIDC: %d signing key(s) from %s", len(keys), self.jwks_url)

    async def _fetch(self) -> dict[str | None, _Key]:
        body = bytearray()
        async with (
            httpx.AsyncClient(timeout=self.fetch_timeout) as client,
            client.stream("GET", self.jwks_url, headers={"accept": "application/json"}) as resp,
        ):
            if resp.status_code != 200:
                raise OidcError(f"HTTP {resp.status_code}")
            async for chunk in resp.aiter_bytes():
                body += chunk
                if len(body) > MAX_JWKS_BYTES:
                    raise OidcError("key set too large")
        document = json.loads(body)
        entries = document.get("keys") if isinstance(document, dict) else None
        if not isinstance(entries, list):
            raise OidcError("not a JWK set")
        keys: dict[str | None, _Key] = {}
        for entry in entries:
            if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
                continue
            try:
                key = jwt.PyJWK(entry)
            except jwt.PyJWTError:
                continue  # a key type or curve we do not use
            # An EC key's curve fixes its algorithm; an RSA key without "alg" serves RS* and PS*.
            alg = entry.get("alg") or (key.algorithm_name if key.key_type == "EC" else None)
            usable = {_ASYMMETRIC[a] for a in self.algorithms if alg in (a, None)}
            if key.key_type in usable:
                keys[key.key_id] = (key, alg)
        if not keys:
            raise OidcError("no usable signing keys")
        return keys


def verifier_from(settings: Settings) -> OidcVerifier | None:
    """The verifier the settings configure, or None when OpenID Connect is off."""
    if not settings.oidc_enabled:
        return None
    return OidcVerifier(settings.oidc_issuer, settings.oidc_audience, settings.oidc_jwks_url,
                        settings.oidc_role_claim or None)

