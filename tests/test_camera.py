"""Camera pictures through the node (`GET /printers/{id}/camera`): a snapshot, the first
frame of an MJPEG stream, kept 2 s; what is not a picture, too large, missing or outside the
printers' networks is a 502 in words; no camera address is a 404."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from mes.api.app import create_app
from mes.auth.bootstrap import ensure_admin
from mes.node import FarmNode
from tests.accounts import make_user
from tests.auth import admin_headers
from tests.farm_helpers import SINGLE_NODE, farm_settings
from tests.ports import free_port

JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4 + b"\xff\xd9"
OTHER = b"\xff\xd8\xff\xe1" + b"second frame" * 10 + b"\xff\xd9"


class Camera:
    """A webcam server on loopback: a snapshot, an endless MJPEG stream, and wrong answers."""

    def __init__(self) -> None:
        self.snapshots = 0
        self.port = free_port()

    async def snapshot(self, _: web.Request) -> web.Response:
        self.snapshots += 1
        return web.Response(body=JPEG, content_type="image/jpeg")

    async def stream(self, request: web.Request) -> web.StreamResponse:
        answer = web.StreamResponse(headers={
            "Content-Type": "multipart/x-mixed-replace; boundary=frame"})
        await answer.prepare(request)
        for frame in (JPEG, OTHER):
            await answer.write(b"--frame\r\nContent-Type: image/jpeg\r\n\r\n" + frame + b"\r\n")
        with contextlib.suppress(ConnectionError):
            while True:  # a camera streams until the client goes
                await asyncio.sleep(0.05)
                await answer.write(b"--frame\r\nContent-Type: image/jpeg\r\n\r\n" + OTHER)
        return answer

    async def page(self, _: web.Request) -> web.Response:
        return web.Response(text="<html>camera settings</html>", content_type="text/html")

    async def big(self, _: web.Request) -> web.Response:
        return web.Response(body=b"\xff\xd8" + b"x" * (6 * 2**20), content_type="image/jpeg")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
async def camera() -> AsyncIterator[Camera]:
    cam = Camera()
    app = web.Application()
    app.router.add_get("/snap.jpg", cam.snapshot)
    app.router.add_get("/stream", cam.stream)
    app.router.add_get("/page", cam.page)
    app.router.add_get("/big.jpg", cam.big)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", cam.port).start()
    try:
        yield cam
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def farm(tmp_path: Path, **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    node = FarmNode(farm_settings(tmp_path, **overrides), tuning=SINGLE_NODE)
    app = create_app(node)
    try:
        await ensure_admin(node)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://mes", headers=admin_headers()) as api:
            yield api
    finally:
        await app.state.cameras.aclose()
        node.close()


async def _printer(api: httpx.AsyncClient, pid: str, camera_url: str | None) -> None:
    body: dict[str, Any] = {"id": pid, "worker": False}
    if camera_url:
        body["camera_url"] = camera_url
    answer = await api.post("/api/v1/printers", json=body)
    assert answer.status_code == 201, answer.text


async def test_pictures_through_the_node(tmp_path: Path, camera: Camera) -> None:
    async with farm(tmp_path) as api:
        for pid, path in (("snap", "/snap.jpg"), ("mjpeg", "/stream"), ("page", "/page"),
                          ("big", "/big.jpg"), ("gone", "/missing")):
            await _printer(api, pid, camera.url(path))
        await _printer(api, "blind", None)

        shot = await api.get("/api/v1/printers/snap/camera")
        assert shot.status_code == 200, shot.text
        assert (shot.headers["content-type"], shot.content) == ("image/jpeg", JPEG)
        again = await api.get("/api/v1/printers/snap/camera")
        assert again.content == JPEG and camera.snapshots == 1  # kept for 2 s
        student = await make_user(api, "student")
        assert (await api.get("/api/v1/printers/snap/camera", headers=student)
                ).status_code == 200

        frame = await asyncio.wait_for(api.get("/api/v1/printers/mjpeg/camera"), 10)
        assert frame.status_code == 200 and frame.content == JPEG  # the first frame only

        for pid, words in (("page", "text/html, not a picture"),
                           ("big", "larger than 5 MiB"), ("gone", "HTTP 404")):
            refused = await api.get(f"/api/v1/printers/{pid}/camera")
            assert refused.status_code == 502, (pid, refused.text)
            error = refused.json()["error"]
            assert error["code"] == "camera_unavailable" and words in error["message"], error

        blind = await api.get("/api/v1/printers/blind/camera")
        assert (blind.status_code, blind.json()["error"]["code"]) == (404, "no_camera")
        unknown = await api.get("/api/v1/printers/nobody/camera")
        assert unknown.status_code == 404


async def test_a_camera_outside_the_printers_networks_is_not_reached(
        tmp_path: Path, camera: Camera) -> None:
    async with farm(tmp_path, printer_networks="10.0.0.0/8",
                    allow_local_addresses=False) as api:
        await _printer(api, "snap", camera.url("/snap.jpg"))
        refused = await api.get("/api/v1/printers/snap/camera")
        assert refused.status_code == 502, refused.text
        assert "not one printers may be at" in refused.json()["error"]["message"]
        assert camera.snapshots == 0  # never connected to
