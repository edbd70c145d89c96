"""G-code uploads: what is refused (and then nothing is stored), what is kept, downloads."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest

from mes.node import FarmNode
from tests.accounts import make_user
from tests.farm_helpers import GCODE

BGCODE = b"GCDE\x01\x00\x00\x00" + bytes(range(256))


def stored_blobs(node: FarmNode) -> list[Path]:
    return [p for p in node.blobs.root.rglob("*") if p.is_file()]


async def test_upload_and_download_keep_name_and_content(api: httpx.AsyncClient,
                                                         node: FarmNode) -> None:
    response = await api.post("/api/v1/files", files={"file": ("Benchy v2.gcode", GCODE)})
    assert response.status_code == 201
    record = response.json()
    assert record["id"] == hashlib.sha256(GCODE).hexdigest()
    assert (record["name"], record["size"]) == ("Benchy v2.gcode", len(GCODE))
    download = await api.get(f"/api/v1/files/{record['id']}")
    assert download.content == GCODE
    assert 'filename="Benchy v2.gcode"' in download.headers["content-disposition"]
    assert stored_blobs(node) == [node.blobs.path(record["id"])]
    again = await api.post("/api/v1/files", files={"file": ("copy.gcode", GCODE)})
    assert again.json()["id"] == record["id"]  # content-addressed: one blob
    assert len(stored_blobs(node)) == 1
    binary = await api.post("/api/v1/files", files={"file": ("part.bgcode", BGCODE)})
    assert binary.status_code == 201
    listed = (await api.get("/api/v1/files")).json()
    assert {f["name"] for f in listed} == {"Benchy v2.gcode", "part.bgcode"}


@pytest.mark.parametrize(
    ("name", "content", "status", "code"),
    [
        ("model.stl", GCODE, 422, "invalid_file_type"),
        ("empty.gcode", b"", 422, "empty_file"),
        ("binary.gcode", b"G28\n\x00\x01\x02\xff\xfe", 422, "not_text"),
        ("latin.gcode", b"G28 ; \xff\xfe\xfa caf\xe9\n" * 10, 422, "not_text"),
        ("fake.bgcode", b"G28\n", 422, "invalid_bgcode"),
        ("../../etc/passwd.gcode", GCODE, 422, "invalid_file_name"),
        ("dir\\evil.gcode", GCODE, 422, "invalid_file_name"),
    ],
)
async def test_bad_uploads_are_refused_and_nothing_is_stored(
        api: httpx.AsyncClient, node: FarmNode, name: str, content: bytes, status: int,
        code: str) -> None:
    response = await api.post("/api/v1/files", files={"file": (name, content)})
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert stored_blobs(node) == []
    assert (await api.get("/api/v1/files")).json() == []


async def test_control_characters_in_the_name_are_refused(api: httpx.AsyncClient,
                                                          node: FarmNode) -> None:
    # httpx percent-encodes such names, so the multipart body is written by hand.
    body = (b'--B\r\nContent-Disposition: form-data; name="file"; filename="bell\x07.gcode"\r\n'
            b"Content-Type: application/octet-stream\r\n\r\n" + GCODE + b"\r\n--B--\r\n")
    response = await api.post("/api/v1/files", content=body,
                              headers={"content-type": "multipart/form-data; boundary=B"})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_file_name"
    assert stored_blobs(node) == []


async def test_upload_over_the_limit_is_413(api: httpx.AsyncClient, node: FarmNode) -> None:
    node.settings.max_upload_mb = 1
    big = b"G1 X1 Y1\n" * (2**20 // 9 + 10)
    response = await api.post("/api/v1/files", files={"file": ("big.gcode", big)})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "file_too_large"
    assert stored_blobs(node) == []


async def test_upload_without_a_file_field_is_422(api: httpx.AsyncClient) -> None:
    response = await api.post("/api/v1/files", data={"something": "else"})
    assert response.status_code == 422


async def test_job_with_unknown_file_is_404_and_multipart_job_is_validated(
        api: httpx.AsyncClient, node: FarmNode) -> None:
    await api.post("/api/v1/filaments", json={"id": "f", "type": "PLA", "color": "red",
                                              "total_weight_in_grams": 100})
    missing = await api.post("/api/v1/print_jobs", json={
        "filament_id": "f", "file_id": "a" * 64, "print_weight_in_grams": 1})
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "file_not_found"
    bad_weight = await api.post("/api/v1/print_jobs", files={"file": ("a.gcode", GCODE)},
                                data={"filament_id": "f", "print_weight_in_grams": "lots"})
    assert bad_weight.status_code == 422
    assert bad_weight.json()["error"]["field"] == "print_weight_in_grams"
    bad_file = await api.post("/api/v1/print_jobs", files={"file": ("a.stl", GCODE)},
                              data={"filament_id": "f", "print_weight_in_grams": "5"})
    assert bad_file.status_code == 422
    assert stored_blobs(node) == []
    assert (await api.get("/api/v1/print_jobs")).json() == []
    good = await api.post("/api/v1/print_jobs", files={"file": ("a.gcode", GCODE)},
                          data={"filament_id": "f", "print_weight_in_grams": "5"})
    assert good.status_code == 201
    assert good.json()["filepath"] == "a.gcode"
    assert good.json()["file_id"] == hashlib.sha256(GCODE).hexdigest()


async def test_unknown_file_download_is_404(api: httpx.AsyncClient) -> None:
    response = await api.get(f"/api/v1/files/{'b' * 64}")
    assert response.status_code == 404


async def test_unicode_names_download_with_rfc5987_filename(api: httpx.AsyncClient) -> None:
    record = (await api.post("/api/v1/files", files={"file": ("测试 ü.gcode", GCODE)})).json()
    download = await api.get(f"/api/v1/files/{record['id']}")
    assert download.status_code == 200 and download.content == GCODE
    assert "filename*=UTF-8''%E6%B5%8B%E8%AF%95%20%C3%BC.gcode" in \
        download.headers["content-disposition"]


async def test_identical_files_keep_each_submitters_name(api: httpx.AsyncClient) -> None:
    """Identical content is stored once, but each upload's answer and each job made from
    it keep the name its submitter gave (not the first upload's)."""
    spool = {"id": "pla", "type": "PLA", "color": "red", "total_weight_in_grams": 800}
    assert (await api.post("/api/v1/filaments", json=spool)).status_code == 201
    alice = await make_user(api, "alice")
    bob = await make_user(api, "bob")
    first = await api.post("/api/v1/files", files={"file": ("part0.gcode", GCODE)},
                           headers=alice)
    assert first.status_code == 201, first.text
    second = await api.post("/api/v1/files", files={"file": ("my-keychain.gcode", GCODE)},
                            headers=bob)
    assert second.json()["id"] == first.json()["id"]
    assert second.json()["name"] == "my-keychain.gcode"
    job = await api.post("/api/v1/print_jobs", headers=bob,
                         data={"filament_id": "pla", "print_weight_in_grams": "5"},
                         files={"file": ("my-keychain.gcode", GCODE)})
    assert job.status_code == 201, job.text
    assert job.json()["filepath"] == "my-keychain.gcode"
    shown = await api.get(f"/api/v1/print_jobs/{job.json()['id']}", headers=bob)
    assert shown.json()["filepath"] == "my-keychain.gcode"
    theirs = await api.post("/api/v1/print_jobs", headers=alice,
                            data={"filament_id": "pla", "print_weight_in_grams": "5"},
                            files={"file": ("part0.gcode", GCODE)})
    assert theirs.json()["filepath"] == "part0.gcode"
