"""Shared fixtures: free loopback ports and an in-process single-node farm."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

import tests.examples  # noqa: F401  (Hypothesis profiles: full in CI, fewer examples otherwise)
from mes.api.app import create_app
from mes.auth.bootstrap import ensure_admin
from mes.config import Settings
from mes.node import FarmNode
from tests.auth import ADMIN_TOKEN, admin_headers
from tests.emulators import start_emulator  # noqa: F401  (fixtures for every test module)
from tests.farm_helpers import SINGLE_NODE
from tests.interrupt import pytest_runtest_setup  # noqa: F401  (Ctrl-C keeps the summary)
from tests.netfilter import partition  # noqa: F401  (iptables partitions on loopback)
from tests.ports import free_port
from tests.real_moonraker import moonraker, moonraker_api_key  # noqa: F401
from tests.real_octoprint import octoprint  # noqa: F401
from tests.tiers import mark_tiers

# Every server a test starts, in this process or as a child, bootstraps this admin token.
os.environ["MES_ADMIN_TOKEN"] = ADMIN_TOKEN
# Printers (emulators) and webhook receivers of tests are on this host: allow local addresses.
os.environ["ALLOW_LOCAL_ADDRESSES"] = "true"
# No OPC UA server unless a test asks for one (they bind free ports then).
os.environ["OPCUA_ENABLED"] = "false"


@pytest.fixture
def node(tmp_path: Path) -> Iterator[FarmNode]:
    settings = Settings(_env_file=None, data_dir=tmp_path / "data",  # type: ignore[call-arg]
                        upload_path=tmp_path / "upload",
                        raft_self=f"127.0.0.1:{free_port()}", raft_write_timeout=3.0)
    farm = FarmNode(settings, tuning=SINGLE_NODE)
    yield farm
    farm.close()


@pytest.fixture
async def api(node: FarmNode) -> AsyncIterator[httpx.AsyncClient]:
    await ensure_admin(node)  # as the leader loop does (this fixture runs no lifespan)
    transport = httpx.ASGITransport(app=create_app(node))
    async with httpx.AsyncClient(transport=transport, base_url="http://mes",
                                 headers=admin_headers()) as client:
        yield client


@pytest.fixture(autouse=True)
def _descriptor_report(request: pytest.FixtureRequest) -> Iterator[None]:
    """With MES_FD_REPORT set to a file, note every test after which this process holds more
    open descriptors than before it (a leak shows as a steady climb over the run)."""
    report = os.environ.get("MES_FD_REPORT")
    if not report:
        yield
        return
    before = len(os.listdir("/proc/self/fd"))
    yield
    after = len(os.listdir("/proc/self/fd"))
    if after > before:
        with open(report, "a", encoding="utf-8") as out:
            out.write(f"{after - before:+d} {after} {request.node.nodeid}\n")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test gets its tier (tests/tiers.py): unit, node, process, cluster."""
    mark_tiers(items)
