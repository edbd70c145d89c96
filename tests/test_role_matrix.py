"""Every route of the OpenAPI, called with no token, a bad one, a revoked one and each
role's token. The expected status of each is in EXPECTED: a new route without a row fails."""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from mes.node import FarmNode
from tests.accounts import make_user
from tests.auth import bearer
from tests.farm_helpers import raise_to_data_level, upload
from tests.test_gcode_meta import thumbnail_block, tiny_png

# (method, path) -> statuses for (user, operator, admin); anonymous, bad and revoked tokens
# get 401 on every route but the public ones.
EXPECTED: dict[tuple[str, str], tuple[int, int, int]] = {
    ("GET", "/api/v1/printers"): (200, 200, 200),
    ("POST", "/api/v1/printers"): (403, 201, 201),
    ("GET", "/api/v1/printers/{printer_id}"): (200, 200, 200),
    ("PATCH", "/api/v1/printers/{printer_id}"): (403, 200, 200),
    ("DELETE", "/api/v1/printers/{printer_id}"): (403, 204, 204),
    ("GET", "/api/v1/groups"): (200, 200, 200),
    ("POST", "/api/v1/groups/rename"): (403, 200, 200),
    ("GET", "/api/v1/printers/{printer_id}/status"): (200, 200, 200),
    # Every role may see a camera; the printer made here has none (tests/test_camera.py).
    ("GET", "/api/v1/printers/{printer_id}/camera"): (404, 404, 404),
    ("POST", "/api/v1/printers/{printer_id}/bed_cleared"): (403, 200, 200),
    ("POST", "/api/v1/printers/{printer_id}/reservation"): (403, 200, 200),
    ("DELETE", "/api/v1/printers/{printer_id}/reservation"): (403, 200, 200),
    ("GET", "/api/v1/filaments"): (200, 200, 200),
    ("POST", "/api/v1/filaments"): (403, 201, 201),
    ("GET", "/api/v1/filaments/{filament_id}"): (200, 200, 200),
    ("PATCH", "/api/v1/filaments/{filament_id}"): (403, 200, 200),
    ("DELETE", "/api/v1/filaments/{filament_id}"): (403, 204, 204),
    ("GET", "/api/v1/print_jobs"): (200, 200, 200),
    ("GET", "/api/v1/print_jobs/export"): (200, 200, 200),
    ("GET", "/api/v1/print_jobs/queue"): (200, 200, 200),
    ("POST", "/api/v1/print_jobs"): (201, 201, 201),
    # The job routes act on a job the admin owns: a user does not see it at all.
    ("GET", "/api/v1/print_jobs/{job_id}"): (404, 200, 200),
    ("POST", "/api/v1/print_jobs/{job_id}/status"): (404, 200, 200),
    ("POST", "/api/v1/print_jobs/{job_id}/pause"): (404, 409, 409),
    ("POST", "/api/v1/print_jobs/{job_id}/resume"): (404, 409, 409),
    ("GET", "/api/v1/print_jobs/{job_id}/history"): (404, 200, 200),
    ("POST", "/api/v1/print_jobs/{job_id}/approve"): (403, 409, 409),
    ("POST", "/api/v1/print_jobs/{job_id}/reject"): (403, 409, 409),
    ("POST", "/api/v1/print_jobs/{job_id}/queue"): (403, 200, 200),
    ("POST", "/api/v1/orders"): (201, 201, 201),
    ("GET", "/api/v1/orders"): (200, 200, 200),
    ("GET", "/api/v1/orders/{order_id}"): (404, 200, 200),
    ("POST", "/api/v1/files"): (201, 201, 201),
    ("GET", "/api/v1/files"): (200, 200, 200),
    ("GET", "/api/v1/files/{file_id}"): (404, 200, 200),
    ("GET", "/api/v1/files/{file_id}/metadata"): (404, 200, 200),
    ("GET", "/api/v1/files/{file_id}/thumbnail"): (404, 200, 200),
    ("GET", "/api/v1/users"): (403, 403, 200),
    ("POST", "/api/v1/users"): (403, 403, 201),
    ("GET", "/api/v1/users/me"): (200, 200, 200),
    ("GET", "/api/v1/users/{user_id}"): (403, 403, 200),
    ("PATCH", "/api/v1/users/{user_id}"): (403, 403, 200),
    ("POST", "/api/v1/tokens"): (201, 201, 201),
    ("GET", "/api/v1/tokens"): (200, 200, 200),
    ("GET", "/api/v1/tokens/{token_id}"): (404, 404, 200),
    ("DELETE", "/api/v1/tokens/{token_id}"): (404, 404, 200),
    ("GET", "/api/v1/audit"): (403, 403, 200),
    ("GET", "/api/v1/cluster"): (403, 200, 200),
    ("GET", "/api/v1/cluster/digest"): (403, 200, 200),
    ("GET", "/api/v1/cluster/backup"): (403, 403, 200),
    ("GET", "/api/v1/workers"): (403, 200, 200),
    # Admins only: a real change would leave this single node without a quorum, so the
    # admin's call is refused by validation (bad address) or names no member (404).
    ("POST", "/api/v1/cluster/nodes"): (403, 403, 400),
    ("DELETE", "/api/v1/cluster/nodes/{address}"): (403, 403, 404),
    ("GET", "/api/v1/health"): (200, 200, 200),
    ("GET", "/api/v1/health/live"): (200, 200, 200),
    ("GET", "/api/v1/utilization"): (200, 200, 200),
    # Prometheus' path, outside /api/v1 (METRICS_PUBLIC false, the default).
    ("GET", "/metrics"): (403, 200, 200),
    # An id that is not this farm's: the stream says `reload` and ends (an open stream
    # would never end here); tests/test_events.py covers the stream itself.
    ("GET", "/api/v1/events"): (200, 200, 200),
    ("POST", "/api/v1/webhooks"): (403, 201, 201),
    ("GET", "/api/v1/webhooks"): (403, 200, 200),
    ("GET", "/api/v1/webhooks/{webhook_id}"): (403, 200, 200),
    ("DELETE", "/api/v1/webhooks/{webhook_id}"): (403, 200, 200),
    ("GET", "/api/v1/webhooks/{webhook_id}/deliveries"): (403, 200, 200),
    # A test notification to a closed loopback port: sent, failed, answered (200).
    ("POST", "/api/v1/webhooks/{webhook_id}/test"): (403, 200, 200),
    ("GET", "/api/v1/deliveries"): (403, 200, 200),
    # Signing in needs no token (the body carries a name and password); the web page's
    # other routes need one (a bearer token or the session cookie).
    ("POST", "/api/v1/session"): (200, 200, 200),
    ("GET", "/api/v1/session"): (200, 200, 200),
    ("DELETE", "/api/v1/session"): (204, 204, 204),
    ("GET", "/api/v1/dashboard/printers"): (200, 200, 200),
    ("GET", "/api/v1/dashboard/overview"): (200, 200, 200),
}
PUBLIC = {("GET", "/api/v1/health"), ("GET", "/api/v1/health/live"),
          ("POST", "/api/v1/session")}


@dataclass
class Call:
    """One request: its path (ids filled in), body and form files."""

    path: str
    json: Any = None
    params: dict[str, str] = field(default_factory=dict)
    files: dict[str, Any] | None = None


_counter = itertools.count()


def fresh(prefix: str) -> str:
    return f"{prefix}{next(_counter)}"


async def ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code in (200, 201), response.text
    data: dict[str, Any] = response.json()
    return data


async def admin_job(api: httpx.AsyncClient) -> str:
    """A queued job owned by the admin, on the shared spool."""
    job_id = fresh("j")
    await ok(await api.post("/api/v1/print_jobs", json={
        "id": job_id, "filament_id": "spool", "filepath": "a.gcode",
        "print_weight_in_grams": 1}))
    return job_id


async def printer(api: httpx.AsyncClient) -> str:
    printer_id = fresh("p")
    await ok(await api.post("/api/v1/printers", json={"id": printer_id}))
    return printer_id


async def filament(api: httpx.AsyncClient) -> str:
    spool_id = fresh("f")
    await ok(await api.post("/api/v1/filaments", json={
        "id": spool_id, "type": "PLA", "color": "red", "total_weight_in_grams": 100}))
    return spool_id


async def other_user(api: httpx.AsyncClient) -> str:
    user_id = fresh("u")
    await ok(await api.post("/api/v1/users", json={"id": user_id, "name": user_id}))
    return user_id


async def admin_token(api: httpx.AsyncClient) -> str:
    return str((await ok(await api.post("/api/v1/tokens", json={"name": fresh("t")})))["id"])


async def group_to_rename(api: httpx.AsyncClient) -> Call:
    """A group of one new printer, renamed."""
    group = fresh("g")
    await ok(await api.post("/api/v1/printers", json={"id": fresh("p"), "group": group}))
    return Call("/api/v1/groups/rename", json={"group": group, "to": fresh("g")})


def webhook_fields() -> dict[str, Any]:
    return {"url": "http://127.0.0.1:9/hook", "types": ["job.done"]}


async def webhook(api: httpx.AsyncClient) -> str:
    return str((await ok(await api.post("/api/v1/webhooks", json=webhook_fields())))["id"])


def job_fields() -> dict[str, Any]:
    return {"filament_id": "spool", "filepath": "a.gcode", "print_weight_in_grams": 1}


Prepare = Callable[[httpx.AsyncClient], Awaitable[Call]]


async def _file_of_admin_job(api: httpx.AsyncClient, below: str = "") -> Call:
    """A file (with a slicer's picture) that an admin's job prints; `below` its id."""
    picture = "\n".join(thumbnail_block(tiny_png(), "2x1")) + "\n"
    stored = await upload(api, name=f"{fresh('g')}.gcode",
                          content=f"{picture}G28 ; {fresh('x')}\n".encode())
    await ok(await api.post("/api/v1/print_jobs", json={**job_fields(), "file_id": stored["id"]}))
    return Call(f"/api/v1/files/{stored['id']}{below}")


async def _order_of_admin(api: httpx.AsyncClient) -> Call:
    order = await ok(await api.post("/api/v1/orders", json={"jobs": [job_fields()]}))
    return Call(f"/api/v1/orders/{order['id']}")


def const(call: Call) -> Prepare:
    async def prepare(_: httpx.AsyncClient) -> Call:
        return call
    return prepare


def with_id(template: str, make: Callable[[httpx.AsyncClient], Awaitable[str]],
            **extra: Any) -> Prepare:
    async def prepare(api: httpx.AsyncClient) -> Call:
        return Call(template.format(await make(api)), **extra)
    return prepare


def creating(path: str, body: Callable[[], dict[str, Any]]) -> Prepare:
    async def prepare(_: httpx.AsyncClient) -> Call:
        return Call(path, json=body())
    return prepare


async def _upload(_: httpx.AsyncClient) -> Call:
    return Call("/api/v1/files", files={"file": (f"{fresh('u')}.gcode",
                                                 f"G28 ; {fresh('y')}\n".encode())})


async def _reserved_printer(api: httpx.AsyncClient) -> Call:
    printer_id = await printer(api)
    await ok(await api.post(f"/api/v1/printers/{printer_id}/reservation",
                            json={"holder": "x", "duration_seconds": 60}))
    return Call(f"/api/v1/printers/{printer_id}/reservation")


async def _sign_in(api: httpx.AsyncClient) -> Call:
    name = fresh("web")
    await ok(await api.post("/api/v1/users", json={"name": name, "password": "secret-words"}))
    return Call("/api/v1/session", json={"name": name, "password": "secret-words"})


PREPARE: dict[tuple[str, str], Prepare] = {
    ("GET", "/api/v1/printers"): const(Call("/api/v1/printers")),
    ("POST", "/api/v1/printers"): creating("/api/v1/printers", lambda: {"id": fresh("p")}),
    ("GET", "/api/v1/printers/{printer_id}"): with_id("/api/v1/printers/{}", printer),
    ("PATCH", "/api/v1/printers/{printer_id}"): with_id("/api/v1/printers/{}", printer,
                                                        json={"model": "MK4"}),
    ("DELETE", "/api/v1/printers/{printer_id}"): with_id("/api/v1/printers/{}", printer),
    ("GET", "/api/v1/printers/{printer_id}/status"): with_id("/api/v1/printers/{}/status",
                                                             printer),
    ("GET", "/api/v1/printers/{printer_id}/camera"): with_id("/api/v1/printers/{}/camera",
                                                             printer),
    ("POST", "/api/v1/printers/{printer_id}/bed_cleared"): with_id(
        "/api/v1/printers/{}/bed_cleared", printer),
    ("POST", "/api/v1/printers/{printer_id}/reservation"): with_id(
        "/api/v1/printers/{}/reservation", printer,
        json={"holder": "x", "duration_seconds": 60}),
    ("DELETE", "/api/v1/printers/{printer_id}/reservation"): _reserved_printer,
    ("GET", "/api/v1/filaments"): const(Call("/api/v1/filaments")),
    ("POST", "/api/v1/filaments"): creating("/api/v1/filaments", lambda: {
        "id": fresh("f"), "type": "PLA", "color": "red", "total_weight_in_grams": 100}),
    ("GET", "/api/v1/filaments/{filament_id}"): with_id("/api/v1/filaments/{}", filament),
    ("PATCH", "/api/v1/filaments/{filament_id}"): with_id("/api/v1/filaments/{}", filament,
                                                          json={"color": "blue"}),
    ("DELETE", "/api/v1/filaments/{filament_id}"): with_id("/api/v1/filaments/{}", filament),
    ("GET", "/api/v1/print_jobs"): const(Call("/api/v1/print_jobs")),
    ("GET", "/api/v1/groups"): const(Call("/api/v1/groups")),
    ("POST", "/api/v1/groups/rename"): group_to_rename,
    ("GET", "/api/v1/print_jobs/export"): const(Call("/api/v1/print_jobs/export")),
    ("GET", "/api/v1/print_jobs/queue"): const(Call("/api/v1/print_jobs/queue")),
    ("POST", "/api/v1/print_jobs"): creating("/api/v1/print_jobs", job_fields),
    ("GET", "/api/v1/print_jobs/{job_id}"): with_id("/api/v1/print_jobs/{}", admin_job),
    ("POST", "/api/v1/print_jobs/{job_id}/status"): with_id(
        "/api/v1/print_jobs/{}/status", admin_job, params={"status": "Canceled"}),
    ("POST", "/api/v1/print_jobs/{job_id}/pause"): with_id("/api/v1/print_jobs/{}/pause",
                                                           admin_job),
    ("POST", "/api/v1/print_jobs/{job_id}/resume"): with_id("/api/v1/print_jobs/{}/resume",
                                                            admin_job),
    ("GET", "/api/v1/print_jobs/{job_id}/history"): with_id("/api/v1/print_jobs/{}/history",
                                                            admin_job),
    ("POST", "/api/v1/print_jobs/{job_id}/approve"): with_id("/api/v1/print_jobs/{}/approve",
                                                             admin_job),
    ("POST", "/api/v1/print_jobs/{job_id}/reject"): with_id(
        "/api/v1/print_jobs/{}/reject", admin_job, json={"reason": "no"}),
    ("POST", "/api/v1/print_jobs/{job_id}/queue"): with_id(
        "/api/v1/print_jobs/{}/queue", admin_job, json={"priority": 5}),
    ("POST", "/api/v1/orders"): creating("/api/v1/orders", lambda: {"jobs": [job_fields()]}),
    ("GET", "/api/v1/orders"): const(Call("/api/v1/orders")),
    ("GET", "/api/v1/orders/{order_id}"): _order_of_admin,
    ("POST", "/api/v1/files"): _upload,
    ("GET", "/api/v1/files"): const(Call("/api/v1/files")),
    ("GET", "/api/v1/files/{file_id}"): _file_of_admin_job,
    ("GET", "/api/v1/files/{file_id}/metadata"): lambda api: _file_of_admin_job(
        api, "/metadata"),
    ("GET", "/api/v1/files/{file_id}/thumbnail"): lambda api: _file_of_admin_job(
        api, "/thumbnail"),
    ("GET", "/api/v1/users"): const(Call("/api/v1/users")),
    ("POST", "/api/v1/users"): creating("/api/v1/users", lambda: {"name": fresh("n")}),
    ("GET", "/api/v1/users/me"): const(Call("/api/v1/users/me")),
    ("GET", "/api/v1/users/{user_id}"): with_id("/api/v1/users/{}", other_user),
    ("PATCH", "/api/v1/users/{user_id}"): with_id("/api/v1/users/{}", other_user,
                                                  json={"email": "x@example.org"}),
    ("POST", "/api/v1/tokens"): creating("/api/v1/tokens", lambda: {"name": fresh("t")}),
    ("GET", "/api/v1/tokens"): const(Call("/api/v1/tokens")),
    ("GET", "/api/v1/tokens/{token_id}"): with_id("/api/v1/tokens/{}", admin_token),
    ("DELETE", "/api/v1/tokens/{token_id}"): with_id("/api/v1/tokens/{}", admin_token),
    ("GET", "/api/v1/audit"): const(Call("/api/v1/audit")),
    ("GET", "/api/v1/cluster"): const(Call("/api/v1/cluster")),
    ("GET", "/api/v1/cluster/digest"): const(Call("/api/v1/cluster/digest")),
    ("GET", "/api/v1/cluster/backup"): const(Call("/api/v1/cluster/backup")),
    ("GET", "/api/v1/workers"): const(Call("/api/v1/workers")),
    ("POST", "/api/v1/cluster/nodes"): creating("/api/v1/cluster/nodes",
                                                lambda: {"address": "no port"}),
    ("DELETE", "/api/v1/cluster/nodes/{address}"): const(
        Call("/api/v1/cluster/nodes/127.0.0.1:1")),
    ("GET", "/api/v1/health"): const(Call("/api/v1/health")),
    ("GET", "/api/v1/health/live"): const(Call("/api/v1/health/live")),
    ("GET", "/api/v1/utilization"): const(Call("/api/v1/utilization")),
    ("GET", "/metrics"): const(Call("/metrics")),
    ("GET", "/api/v1/events"): const(Call("/api/v1/events", params={"after": "x"})),
    ("POST", "/api/v1/webhooks"): creating("/api/v1/webhooks", webhook_fields),
    ("GET", "/api/v1/webhooks"): const(Call("/api/v1/webhooks")),
    ("GET", "/api/v1/webhooks/{webhook_id}"): with_id("/api/v1/webhooks/{}", webhook),
    ("DELETE", "/api/v1/webhooks/{webhook_id}"): with_id("/api/v1/webhooks/{}", webhook),
    ("GET", "/api/v1/webhooks/{webhook_id}/deliveries"): with_id(
        "/api/v1/webhooks/{}/deliveries", webhook),
    ("POST", "/api/v1/webhooks/{webhook_id}/test"): with_id("/api/v1/webhooks/{}/test",
                                                            webhook),
    ("GET", "/api/v1/deliveries"): const(Call("/api/v1/deliveries")),
    ("POST", "/api/v1/session"): _sign_in,
    ("GET", "/api/v1/session"): const(Call("/api/v1/session")),
    ("DELETE", "/api/v1/session"): const(Call("/api/v1/session")),
    ("GET", "/api/v1/dashboard/printers"): const(Call("/api/v1/dashboard/printers")),
    ("GET", "/api/v1/dashboard/overview"): const(Call("/api/v1/dashboard/overview")),
}


async def test_every_route_has_a_row_and_answers_each_role_as_the_table_says(
        api: httpx.AsyncClient, node: FarmNode) -> None:
    await raise_to_data_level(node)  # job.reorder is of this level
    schema = (await api.get("/api/v1/openapi.json")).json()
    routes = {(method.upper(), path) for path, item in schema["paths"].items()
              for method in item if method in ("get", "post", "put", "patch", "delete")}
    assert routes == set(EXPECTED), (
        f"routes without a row: {sorted(routes - set(EXPECTED))}; "
        f"rows without a route: {sorted(set(EXPECTED) - routes)}")
    assert set(PREPARE) == set(EXPECTED)

    await ok(await api.post("/api/v1/filaments", json={
        "id": "spool", "type": "PLA", "color": "black", "total_weight_in_grams": 100_000}))
    tokens = {"user": await make_user(api, "student"),
              "operator": await make_user(api, "staff", role="operator"),
              "admin": {}}  # the client's own admin token
    revoked = await ok(await api.post("/api/v1/tokens", json={"name": "old"}))
    await ok(await api.delete(f"/api/v1/tokens/{revoked['id']}"))
    strangers = {"anonymous": {"Authorization": ""}, "bad": bearer("mes_" + "x" * 43),
                 "revoked": bearer(revoked["token"])}

    wrong: list[str] = []
    for (method, path), by_role in sorted(EXPECTED.items()):
        for who, headers in strangers.items():
            call = await PREPARE[method, path](api)
            response = await api.request(method, call.path, json=call.json, params=call.params,
                                         files=call.files, headers=headers)
            api.cookies.clear()  # a sign-in's session cookie must not authenticate the next
            expected = 200 if (method, path) in PUBLIC else 401
            if response.status_code != expected:
                wrong.append(f"{method} {path} {who}: {response.status_code} != {expected}")
            elif expected == 401 and response.headers.get("www-authenticate", "")[:6] != "Bearer":
                wrong.append(f"{method} {path} {who}: no WWW-Authenticate: Bearer")
        for (role, headers), expected in zip(tokens.items(), by_role, strict=True):
            call = await PREPARE[method, path](api)
            response = await api.request(method, call.path, json=call.json, params=call.params,
                                         files=call.files, headers=headers)
            api.cookies.clear()
            if response.status_code != expected:
                wrong.append(f"{method} {path} {role}: {response.status_code} != {expected} "
                             f"({response.text[:120]})")
            elif response.status_code >= 400:
                assert set(response.json()["error"]) == {"code", "message", "field"}
    assert not wrong, "\n".join(wrong)
