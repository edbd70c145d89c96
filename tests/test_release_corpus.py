"""The farm release 0.1.0 (commit d64c92f) recorded, replayed by the current code.

`tests/corpus/release-0.1.0/` holds the data dir (snapshot and journal after it) and upload
dir of a 0.1.0 server and every fact its API showed (see its README.md and
tests/corpus/record_release.py). The current code starts on them in this process without
workers (nothing moves after the replay) with the recorded Raft address, and must show the
same facts: users, tokens, printers, spools with their grams, jobs with their history,
orders, webhooks, deliveries, audit; the recorded tokens and passwords must still sign in
(the revoked one, the disabled user's and an expired one must not), and a retried
Idempotency-Key must answer its recorded job. Fields a later release adds are allowed;
every recorded one must be equal.

The whole-state digest (GET /cluster/digest) changes with any new table, so the second
test compares the tables of 0.1.0 one by one (their recorded columns, raw rows) and the
digest only while the schema is still exactly 0.1.0's.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from mes.api.app import create_app
from mes.node import FarmNode
from tests.auth import admin_headers, bearer
from tests.corpus.record_release import (
    API,
    applied_index,
    diff,
    open_corpus,
    read_facts,
    reader_used,
    table_facts,
    table_rows,
)
from tests.polling import wait_for
from tests.ports import free_port

CORPUS = Path(__file__).parent / "corpus" / "release-0.1.0"
RECORD: dict[str, Any] = json.loads((CORPUS / "facts.json").read_text())


@pytest.fixture
def replayed(tmp_path: Path) -> Iterator[FarmNode]:
    """The current code started on the corpus (no lifespan: no worker, scheduler or lease),
    once it applied everything 0.1.0 had applied."""
    with open_corpus(CORPUS / "data.tar.gz", tmp_path, RECORD["raft_self"],
                     RECORD["settings"], relocate_to=f"127.0.0.1:{free_port()}") as node:
        wait_for(lambda: applied_index(node) >= RECORD["applied_index"], 15.0,
                 f"the replay to reach index {RECORD['applied_index']}")
        yield node


@pytest.fixture
async def client(replayed: FarmNode) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(replayed))
    async with httpx.AsyncClient(transport=transport, base_url="http://mes",
                                 headers=admin_headers()) as api:
        yield api


def hold_words_apart(facts: dict[str, Any]) -> dict[str, Any]:
    """The facts with each job's hold sentence replaced by whether it has one: the sentence
    is for people and is worded anew when a release words it better (plain words instead
    of API paths since 0.1.0); its `code` is the contract and stays compared."""
    def apart(job: dict[str, Any]) -> dict[str, Any]:
        hold = job.get("hold")
        if not isinstance(hold, dict):
            return job
        worded = isinstance(hold.get("message"), str) and bool(hold["message"])
        same = job.get("hold_reason") == hold.get("message")
        return {**job, "hold": {**hold, "message": worded}, "hold_reason": same}
    return {**facts, "print_jobs": [apart(j) for j in facts["print_jobs"]]}


def report(problems: list[str], what: str) -> str:
    return (f"{len(problems)} difference(s) between the 0.1.0 corpus and {what} "
            "(path: current, recorded):\n  " + "\n  ".join(problems))


async def test_replayed_farm_shows_every_recorded_fact(client: httpx.AsyncClient) -> None:
    start, end = RECORD["window"]
    facts = await read_facts(client, (start, end))
    recorded = RECORD["facts"]
    # The node runs at another Raft address than the recorded one (that port may be taken),
    # so GET /cluster's list of members differs by construction; the leases and assignments
    # it showed are replicated rows, compared by the next test.
    facts = {k: v for k, v in facts.items() if k != "cluster_nodes"}
    recorded = {k: v for k, v in recorded.items() if k != "cluster_nodes"}
    problems = reader_used(recorded, facts, RECORD["reader_token_id"]) + diff(
        hold_words_apart(recorded), hold_words_apart(facts))
    assert not problems, report(problems, "what the current code's API shows")

    # The recorded credentials: the tokens still sign in, except the revoked one, the
    # disabled user's and any that expired since; passwords still sign in.
    now = time.time()
    expiry = {t["id"]: t["expires_at"] for t in recorded["tokens"]}
    for key, token in RECORD["secrets"]["tokens"].items():
        answer = await client.get(f"{API}/users/me", headers=bearer(token["token"]))
        expires = expiry[token["id"]]
        expired = expires is not None and _epoch(expires) <= now
        if token.get("revoked") or token.get("disabled_user") or expired:
            assert answer.status_code == 401, (key, answer.status_code, answer.text)
        else:
            assert answer.status_code == 200, (key, answer.status_code, answer.text)
            assert answer.json()["id"] == token["user_id"], (key, answer.json())
    for name, password in RECORD["secrets"]["passwords"].items():
        answer = await client.post(f"{API}/session", json={"name": name, "password": password})
        assert answer.status_code == 200, (name, answer.status_code, answer.text)
        wrong = await client.post(f"{API}/session", json={"name": name, "password": "x" * 12})
        assert wrong.status_code == 401, (name, wrong.status_code, wrong.text)

    # A write 0.1.0 applied, retried with its Idempotency-Key: its job, and no new one.
    idem = RECORD["secrets"]["idempotent_job"]
    owner = RECORD["secrets"]["tokens"][idem["token"]]["token"]
    retry = await client.post(f"{API}/print_jobs", json=idem["body"],
                              headers={**bearer(owner), "Idempotency-Key": idem["key"]})
    assert retry.status_code in (200, 201), (retry.status_code, retry.text)
    assert retry.json()["id"] == idem["body"]["id"]
    jobs = (await client.get(f"{API}/print_jobs", params={"limit": 1000})).json()
    assert [j["id"] for j in jobs] == [j["id"] for j in recorded["print_jobs"]]


def test_replayed_tables_hold_the_recorded_rows(replayed: FarmNode) -> None:
    """Every table of 0.1.0 holds the same rows in its recorded columns (raw SQLite values);
    tables and columns the current code adds are allowed. Nothing here goes through the API
    (a token's first use in a process is written through Raft)."""
    recorded: dict[str, Any] = RECORD["tables"]
    problems = []
    for name, table in recorded.items():
        now = replayed.read_now(partial(table_rows, name=name, columns=table["columns"]))
        if now.get("missing_columns"):
            problems.append(f"{name}: columns {now['missing_columns']} are gone")
            continue
        if now["sha256"] != table["sha256"]:
            problems.append(f"{name}: rows differ ({now['row_count']} rows, recorded "
                            f"{table['row_count']})")
            problems.extend(diff(table["rows"], now["rows"], name)[:20])
    assert not problems, report(problems, "the current code's tables")

    # The digest covers every table: only while the schema is 0.1.0's can it be equal.
    current = replayed.read_now(table_facts)
    same_schema = {n: t["columns"] for n, t in current.items()} == {
        n: t["columns"] for n, t in recorded.items()}
    if same_schema:
        from mes.state.digest import state_digest

        assert replayed.read_now(state_digest) == RECORD["digest"]["digest"]


def _epoch(value: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def test_the_vendored_release_is_the_commit() -> None:
    """tests/corpus/release-0.1.0/source.tar.gz (used without the history) holds exactly the
    files of commit d64c92f that a release node imports."""
    import io
    import subprocess
    import tarfile

    from tests.release import RELEASE_COMMIT, ROOT, VENDORED, in_history

    if not in_history():
        pytest.skip("this checkout lacks the history to compare the vendored tree with")
    archived = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar",
                               RELEASE_COMMIT, "mes", "opcua_model", "pyproject.toml"],
                              capture_output=True, check=True).stdout

    def files(tar: tarfile.TarFile) -> dict[str, bytes]:
        return {m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
                for m in tar if m.isfile()}

    with tarfile.open(fileobj=io.BytesIO(archived)) as git_tar, \
            tarfile.open(VENDORED) as vendored:
        assert files(vendored) == files(git_tar)
