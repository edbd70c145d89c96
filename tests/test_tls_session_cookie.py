"""The web session cookie's name on a node that serves HTTPS itself (in process; the real
TLS listener is in test_tls.py): `__Host-mes_session`, always Secure, host-only, and the
only name such a node reads, on every path that reads the cookie."""

from __future__ import annotations

import httpx

from mes.node import FarmNode
from tests.auth import bearer

PASSWORD = "correct horse battery"
HOST_COOKIE = "__Host-mes_session"
CSRF = {"X-Requested-With": "mes"}


def _serve_tls(node: FarmNode) -> None:
    # The files are checked by the `server` command before the node starts, not here.
    node.settings.tls_cert_file = "cert.pem"
    node.settings.tls_key_file = "key.pem"


async def _user(api: httpx.AsyncClient, name: str) -> None:
    response = await api.post("/api/v1/users", json={"name": name, "role": "user",
                                                     "password": PASSWORD})
    assert response.status_code == 201, response.text


def _browser(api: httpx.AsyncClient, cookies: dict[str, str] | None = None,
             scheme: str = "https") -> httpx.AsyncClient:
    """No Authorization header; a cookie jar (or the given cookies only)."""
    return httpx.AsyncClient(transport=api._transport, base_url=f"{scheme}://mes",
                             cookies=cookies)


def _attributes(set_cookie: str) -> set[str]:
    return {part.strip().lower() for part in set_cookie.split(";")[1:]}


async def test_a_tls_node_sets_and_reads_only_the_host_cookie(
        node: FarmNode, api: httpx.AsyncClient) -> None:
    _serve_tls(node)
    await _user(api, "hana")
    async with _browser(api) as page:
        signed = await page.post("/api/v1/session", json={"name": "hana",
                                                           "password": PASSWORD})
        assert signed.status_code == 200, signed.text
        cookie = signed.headers["set-cookie"]
        assert cookie.startswith(f"{HOST_COOKIE}=mes_"), cookie
        assert {"secure", "httponly", "path=/", "samesite=strict",
                "max-age=43200"} <= _attributes(cookie), cookie
        assert not any(a.startswith("domain") for a in _attributes(cookie))
        token = page.cookies[HOST_COOKIE]
        assert (await page.get("/api/v1/users/me")).json()["name"] == "hana"
        # Both cookie paths: the route's check and the before-the-body check of POSTs.
        assert (await page.post("/api/v1/tokens", json={"name": "t"})).status_code == 403
        made = await page.post("/api/v1/tokens", json={"name": "t"}, headers=CSRF)
        assert made.status_code == 201, made.text
        me = await page.get("/api/v1/session")
        assert me.status_code == 200 and me.json()["method"] == "password"

    # Secure even if the request says http (a proxy's X-Forwarded-Proto, say): a browser
    # keeps a __Host- cookie only with Secure.
    async with _browser(api, scheme="http") as page:
        signed = await page.post("/api/v1/session", json={"name": "hana",
                                                           "password": PASSWORD})
        assert signed.headers["set-cookie"].startswith(f"{HOST_COOKIE}=mes_")
        assert "secure" in _attributes(signed.headers["set-cookie"])

    # The plain name, which a service on plain http of the same host could have set, is
    # not read by a TLS node: not by routes, nor before a body.
    async with _browser(api, {"mes_session": token}) as plain:
        assert (await plain.get("/api/v1/users/me")).status_code == 401
        refused = await plain.post("/api/v1/tokens", json={"name": "x"}, headers=CSRF)
        assert refused.status_code == 401 and refused.headers["connection"] == "close"

    async with _browser(api, {HOST_COOKIE: token}) as page:
        out = await page.delete("/api/v1/session", headers=CSRF)
        assert out.status_code == 204, out.text
        cleared = out.headers["set-cookie"]
        assert cleared.startswith(f'{HOST_COOKIE}=""') and "secure" in _attributes(cleared)
        assert (await page.get("/api/v1/users/me")).status_code == 401
    assert (await api.get("/api/v1/session", headers=bearer(token))).status_code == 401


async def test_without_tls_the_host_cookie_is_not_read(api: httpx.AsyncClient) -> None:
    await _user(api, "ivo")
    async with _browser(api) as page:
        signed = await page.post("/api/v1/session", json={"name": "ivo",
                                                           "password": PASSWORD})
        assert signed.headers["set-cookie"].startswith("mes_session=mes_")
        token = page.cookies["mes_session"]
    async with _browser(api, {HOST_COOKIE: token}) as other:
        assert (await other.get("/api/v1/users/me")).status_code == 401
