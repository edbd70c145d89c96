"""Big commands never cost an election or a lease (issue 20 §2): 200 orders of 100 jobs
through a 3-node cluster on loopback driving 1,000 mock printers, with full garbage
collections on the followers every 20 s. The run is bench/big_orders.py's."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.big_orders import NODE_SETTINGS, run
from tests.cluster import Cluster

pytestmark = pytest.mark.cluster


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    started = Cluster(3, tmp_path, **NODE_SETTINGS, GC_FULL_INTERVAL="20").start()
    try:
        yield started
    finally:
        started.stop()


def test_20000_jobs_in_200_orders_keep_the_term_the_leader_and_every_lease(
        cluster: Cluster) -> None:
    outcome = run(cluster, printers=1000, orders=200, jobs=100, clients=4, settle=20)
    assert outcome.terms == {outcome.before[0]["term"]}, outcome.terms
    assert len(outcome.leaders) == 1, outcome.leaders
    assert not any(outcome.lapses.values()), outcome.lapses
    assert sum(outcome.statuses.values()) == 20_000  # every order acknowledged, whole
    assert outcome.statuses["Done"] > 0  # the printers printed meanwhile
    assert outcome.statuses["Canceled"] == 0  # no print lost to a lapse
    # The followers collected on schedule; the leader put it off (it leads its peers).
    leader = next(iter(outcome.leaders))
    done = {i: v["full_collections"]["done"] for i, v in outcome.after.items()}
    leading = [n.index for n in cluster.nodes if n.raft_address == leader]
    assert [done[i] for i in leading] == [0], done
    assert all(done[i] >= 1 for i in done if i not in leading), done
