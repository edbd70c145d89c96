"""Adding and removing hubs through the API on a real cluster: a fourth node joins, catches
up and takes writes; a dead node is removed, after which the cluster tolerates another loss."""

from __future__ import annotations

from pathlib import Path

import pytest

from mes.files.store import BlobStore
from tests.cluster import Cluster, ServerProcess
from tests.polling import wait_for

pytestmark = pytest.mark.cluster


def members(node: ServerProcess) -> list[str]:
    return sorted(n["address"] for n in node.cluster()["nodes"])


def printer_ids(node: ServerProcess) -> set[str]:
    return {p["id"] for p in node.every("/printers")}


def test_a_node_added_through_the_api_joins_and_a_removed_one_stops_counting(
        tmp_path: Path) -> None:
    cluster = Cluster(3, tmp_path / "cluster").start()
    try:
        leader = cluster.wait_leader()
        follower = next(n for n in cluster.nodes if n is not leader)
        assert leader.client.post("/printers", json={"id": "before"}).status_code == 201
        # Floating mock printers, spread over the nodes by the leader.
        for n in range(8):
            printer = {"id": f"m{n}", "api": "Mock", "url": f"http://mock-printer{n}:5000",
                       "worker": True}
            assert leader.client.post("/printers", json=printer).status_code == 201
        upload = leader.client.post("/files", files={"file": ("part.gcode", b"G28\nG1 X1\n")})
        assert upload.status_code == 201, upload.text
        sha = upload.json()["id"]
        new = ServerProcess(3, tmp_path / "cluster", {"CLUSTER_SECRET": cluster.secret})
        new.peers = [n.raft_address for n in cluster.nodes]
        cluster.nodes.append(new)  # stopped with the others

        # Refused: a bad address, a member already, and removing the leader or a stranger.
        bad = follower.client.post("/cluster/nodes", json={"address": "no-port"})
        assert (bad.status_code, bad.json()["error"]["code"]) == (400, "invalid_address")
        again = follower.client.post("/cluster/nodes", json={"address": leader.raft_address})
        assert (again.status_code, again.json()["error"]["code"]) == (409, "already_member")
        gone = follower.client.delete("/cluster/nodes/127.0.0.1:1")
        assert gone.status_code == 404
        busy = follower.client.delete(f"/cluster/nodes/{leader.raft_address}")
        assert (busy.status_code, busy.json()["error"]["code"]) == (409, "cannot_remove_leader")

        # Added through a follower (the change goes to the leader), then started.
        added = follower.client.post("/cluster/nodes", json={"address": new.raft_address})
        assert added.status_code == 201, added.text
        assert sorted(added.json()["members"]) == sorted([*new.peers, new.raft_address])
        new.start()
        wait_for(new.healthy, 120, "the new node to catch up")
        # Ready means within a few entries of the leader: the rest arrives from its log.
        wait_for(lambda: "before" in printer_ids(new), 60, "the new node to apply the log")
        # Files stored before it joined are fetched in the background, unasked.
        wait_for(lambda: BlobStore(new.data_dir / "upload").has(sha), 60,
                 "the new node to fetch the stored file")
        assert new.client.post("/printers", json={"id": "through-new"}).status_code == 201
        wait_for(lambda: all("through-new" in printer_ids(n) for n in cluster.nodes), 60,
                 "a write through the new node on every node")
        cluster.assert_same_state()
        every = sorted(n.raft_address for n in cluster.nodes)
        wait_for(lambda: all(members(n) == every for n in cluster.nodes), 60,
                 "every node to list four members")

        def driven_by_new() -> list[str]:
            view = leader.client.get("/cluster").json()
            entry = next((e for e in view["nodes"] if e["address"] == new.raft_address), {})
            return [p for p in entry.get("printers") or [] if p.startswith("m")]

        # The new hub takes its share of the floating printers (8 over 4 nodes: 2).
        wait_for(lambda: len(driven_by_new()) >= 2, 60,
                 "floating printers to move to the new node")

        # A node dies and is removed: three members remain, so one more loss is survivable.
        doomed = next(n for n in cluster.nodes[:3] if n is not cluster.wait_leader())
        doomed.kill()
        leader = cluster.wait_leader()
        key = {"Idempotency-Key": "remove-doomed"}
        removed = leader.client.delete(f"/cluster/nodes/{doomed.raft_address}", headers=key)
        assert removed.status_code == 200, removed.text
        assert doomed.raft_address not in removed.json()["members"]
        # A client that lost the answer retries with its key: the same success, not a 404.
        again = leader.client.delete(f"/cluster/nodes/{doomed.raft_address}", headers=key)
        assert again.status_code == 200, again.text
        assert again.json()["removed"] == doomed.raft_address
        assert doomed.raft_address not in again.json()["members"]
        # Without the key, a node that is neither a member nor known is not found.
        unknown = leader.client.delete(f"/cluster/nodes/{doomed.raft_address}")
        assert unknown.status_code == 404
        survivors = cluster.live()
        wait_for(lambda: all(doomed.raft_address not in members(n) for n in survivors), 60,
                 "every survivor to drop the removed node")
        urls = [n["http_url"] for n in leader.client.get("/cluster").json()["nodes"]]
        assert f"127.0.0.1:{doomed.http_port}" not in " ".join(str(u) for u in urls)
        second = next(n for n in survivors if n is not cluster.wait_leader())
        second.kill()
        leader = cluster.wait_leader()
        answer = leader.client.post("/printers", json={"id": "after-two-losses"})
        assert answer.status_code == 201, answer.text  # 2 of 3 members: still a majority
    finally:
        cluster.stop()
