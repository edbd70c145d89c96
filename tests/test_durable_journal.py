"""The Raft journal is synced before an entry counts as stored, one sync per round."""

from __future__ import annotations

import shutil
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pysyncobj import FAIL_REASON, SyncObj
from pysyncobj.config import SERIALIZER_STATE
from pysyncobj.node import TCPNode

from mes.raft.journal import CorruptJournal, SyncedJournal
from mes.raft.node import RaftNode, RaftTuning, build_conf
from mes.raft.snapshot import SnapshotFiles
from mes.state.machine import StateMachine
from mes.state.ops import Op
from tests.polling import wait_for
from tests.ports import free_port
from tests.power_cut import cut_power_to_synced


def test_sync_makes_every_entry_since_the_last_sync_durable(tmp_path: Path) -> None:
    path = str(tmp_path / "raft.journal")
    journal = SyncedJournal(path, trace=True)
    for i in range(1, 6):
        journal.add(b"synced", i, 1)
    assert journal.dirty
    assert journal.sync() and not journal.dirty
    assert journal.syncs == 1
    assert not journal.sync()  # nothing new: no second sync
    journal.add(b"lost", 6, 1)  # never synced
    journal._destroy()
    cut_power_to_synced(tmp_path)
    reopened = SyncedJournal(path)
    assert [(bytes(e[0]), e[1]) for e in reopened[0:len(reopened)]] == \
        [(b"synced", i) for i in range(1, 6)]


def test_compaction_rewrites_the_journal_into_a_new_synced_file(tmp_path: Path) -> None:
    path = str(tmp_path / "raft.journal")
    journal = SyncedJournal(path, trace=True)
    for i in range(1, 11):
        journal.add(f"e{i}".encode(), i, 2)
    journal.deleteEntriesTo(7)  # entries 1..7 are in a snapshot now
    assert not journal.dirty
    journal.add(b"e11", 11, 2)
    journal.sync()
    journal._destroy()
    cut_power_to_synced(tmp_path)
    reopened = SyncedJournal(path)
    assert [e[1] for e in reopened[0:len(reopened)]] == [8, 9, 10, 11]
    assert bytes(reopened[-1][0]) == b"e11"


def test_a_journal_whose_records_do_not_chain_is_refused(tmp_path: Path) -> None:
    path = str(tmp_path / "raft.journal")
    journal = SyncedJournal(path)
    journal.add(b"a", 1, 1)
    journal.add(b"b", 2, 1)
    journal.sync()
    journal._destroy()
    raw = bytearray(Path(path).read_bytes())
    second = raw.index(b"b") - 16  # the index field of the second record
    raw[second] = 9
    Path(path).write_bytes(bytes(raw))
    with pytest.raises(CorruptJournal):
        SyncedJournal(path)


def test_meta_file_is_stored_durably(tmp_path: Path) -> None:
    path = str(tmp_path / "raft.journal")
    journal = SyncedJournal(path, trace=True)
    journal.setCurrentTerm(7, "127.0.0.1:1")
    journal._destroy()
    cut_power_to_synced(tmp_path)
    assert SyncedJournal(path).getCurrentTerm() == 7


@pytest.fixture
def trio(tmp_path: Path) -> Iterator[list[RaftNode]]:
    addresses = [f"127.0.0.1:{free_port()}" for _ in range(3)]
    nodes: list[RaftNode] = []
    for i, address in enumerate(addresses):
        machine = StateMachine()
        snapshots = SnapshotFiles(machine)
        conf = build_conf(tmp_path / f"n{i}", snapshots, 5000, 300.0, RaftTuning())
        nodes.append(RaftNode(address, [a for a in addresses if a != address], machine, conf,
                              snapshots))
    yield nodes
    for node in nodes:
        node.destroy_synchronous()


def spool(i: int) -> dict[str, Any]:
    args = {"id": f"f{i}", "type": "PLA", "color": "red", "total_weight_in_grams": 1000}
    # straight into the Raft log: plain str, as the writer logs it
    return {"op": Op.FILAMENT_CREATE.value, "args": args, "rid": f"r{i}", "ts": 0.0}


def test_nothing_counts_an_entry_before_it_is_synced(trio: list[RaftNode],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    violations: list[str] = []
    answers = 0
    original_answer = SyncObj._SyncObj__sendNextNodeIdx

    def checked_answer(node: RaftNode, peer: Any, reset: bool, next_idx: int,
                       success: bool) -> None:
        nonlocal answers
        if success:
            answers += 1
            if next_idx - 1 > node.journal.synced_index:
                violations.append(f"follower acknowledged up to {next_idx - 1} before syncing")
        original_answer(node, peer, reset, next_idx, success)

    monkeypatch.setattr(SyncObj, "_SyncObj__sendNextNodeIdx", checked_answer)
    leader = wait_for(lambda: next((n for n in trio if n.is_leader()), None), 10, "a leader")
    original_commit = leader.journal.setRaftCommitIndex

    def checked_commit(index: int) -> None:
        if index > leader.journal.synced_index:
            violations.append(f"leader committed {index} with unsynced entries")
        original_commit(index)

    monkeypatch.setattr(leader.journal, "setRaftCommitIndex", checked_commit)
    syncs_before = [n.journal.syncs for n in trio]
    done = threading.Semaphore(0)
    results: list[int] = []

    def callback(_result: Any, error: int) -> None:
        results.append(error)
        done.release()

    count = 300
    for i in range(count):
        leader.apply_command(spool(i), callback=callback)
    for _ in range(count):
        assert done.acquire(timeout=20)
    assert results == [FAIL_REASON.SUCCESS] * count
    assert violations == []
    assert answers > 0
    syncs = [n.journal.syncs - before for n, before in zip(trio, syncs_before, strict=True)]
    assert all(s > 0 for s in syncs)
    # Group commit: one sync serves every entry of a round, not one per entry.
    assert all(s < count for s in syncs), syncs


def make_trio(tmp_path: Path, snapshot_entries: int) -> list[RaftNode]:
    addresses = [f"127.0.0.1:{free_port()}" for _ in range(3)]
    nodes: list[RaftNode] = []
    for i, address in enumerate(addresses):
        machine = StateMachine()
        snapshots = SnapshotFiles(machine)
        conf = build_conf(tmp_path / f"n{i}", snapshots, snapshot_entries, 300.0, RaftTuning())
        nodes.append(RaftNode(address, [a for a in addresses if a != address], machine, conf,
                              snapshots))
    return nodes


def test_snapshot_entries_bound_the_log(tmp_path: Path) -> None:
    bound = 300
    nodes = make_trio(tmp_path, bound)
    try:
        leader = wait_for(lambda: next((n for n in nodes if n.is_leader()), None), 10, "a leader")
        longest = 0
        done = threading.Semaphore(0)
        for batch in range(12):
            for i in range(50):
                leader.apply_command(spool(batch * 50 + i), callback=lambda *_: done.release())
            for _ in range(50):
                assert done.acquire(timeout=20)
                longest = max([longest, *(len(n.journal) for n in nodes)])
        assert longest <= bound, f"the log reached {longest} entries (bound {bound})"
        wait_for(lambda: all((tmp_path / f"n{i}" / "raft.snapshot").exists() for i in range(3)),
                 10, "every node to write a snapshot")
    finally:
        for node in nodes:
            node.destroy_synchronous()


def dump(machine: StateMachine) -> str:
    """The database's content as SQL text."""
    db = sqlite3.connect(":memory:")
    db.deserialize(machine.snapshot())
    return "\n".join(db.iterdump())


def written(snapshots: SnapshotFiles) -> int | None:
    """The outcome of a background snapshot write, None while it runs."""
    state = snapshots.check()
    return None if state == SERIALIZER_STATE.SERIALIZING else state


def test_snapshot_is_written_in_the_background_then_renamed(tmp_path: Path) -> None:
    machine = StateMachine()
    machine.apply(spool(1))
    snapshots = SnapshotFiles(machine)
    target = tmp_path / "raft.snapshot"
    snapshots.serialize(str(target) + ".tmp", ("raft", 1))
    assert not (tmp_path / "raft.snapshot.tmp").exists()  # pysyncobj's own rename is a no-op
    state = wait_for(lambda: written(snapshots), 10, "the background write")
    assert state == SERIALIZER_STATE.SUCCESS
    assert snapshots.check() == SERIALIZER_STATE.NOT_SERIALIZING
    restored = StateMachine()
    assert SnapshotFiles(restored).deserialize(str(target)) == ("raft", 1)
    assert dump(restored) == dump(machine)
    assert "f1" in dump(restored)


def test_snapshot_installed_meanwhile_is_not_replaced_by_an_older_write(tmp_path: Path) -> None:
    (tmp_path / "leader").mkdir()
    leader_machine = StateMachine()
    leader_machine.apply(spool(2))
    leader_files = SnapshotFiles(leader_machine)
    leader_files.serialize(str(tmp_path / "leader" / "raft.snapshot.tmp"), ("newer", 2))
    wait_for(lambda: leader_files.check() == SERIALIZER_STATE.SUCCESS, 10, "the leader's write")

    snapshots = SnapshotFiles(StateMachine())
    target = tmp_path / "raft.snapshot"
    snapshots.serialize(str(target) + ".tmp", ("older", 1))  # a local write starts...
    shutil.copy(tmp_path / "leader" / "raft.snapshot", target)  # ...the leader's one lands
    assert snapshots.deserialize(str(target)) == ("newer", 2)
    state = wait_for(lambda: written(snapshots), 10, "the older write")
    assert state == SERIALIZER_STATE.FAILED
    assert snapshots.deserialize(str(target)) == ("newer", 2)
    assert not (tmp_path / "raft.snapshot.writing").exists()


def test_a_node_that_lost_its_log_does_not_vote_until_rebuilt(tmp_path: Path) -> None:
    data_dir = tmp_path / "n0"
    data_dir.mkdir()
    (data_dir / "raft.journal").write_bytes(b"PYSYNCOBJ" + b"\xff" * 100)  # unreadable
    machine = StateMachine()
    snapshots = SnapshotFiles(machine)
    conf = build_conf(data_dir, snapshots, 5000, 300.0, RaftTuning())
    peer = f"127.0.0.1:{free_port()}"
    node = RaftNode(f"127.0.0.1:{free_port()}", [peer], machine, conf, snapshots)
    try:
        assert node.rebuilding
        assert list(data_dir.glob("raft.journal.bad-*"))
        vote = {"type": "request_vote", "term": 5, "last_log_index": 10, "last_log_term": 5}
        candidate = TCPNode(peer)
        node._SyncObj__onMessageReceived(candidate, vote)
        assert node.journal.getVotedForNodeId() is None
        node.rebuilding = False
        node._SyncObj__onMessageReceived(candidate, vote)
        assert node.journal.getVotedForNodeId() == peer
    finally:
        node.destroy_synchronous()


def test_a_crash_between_the_snapshot_and_the_compaction_loses_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The snapshot is renamed into place, then the journal is compacted: a node killed in
    between restarts with a journal that starts before the snapshot. pysyncobj clears such a
    journal, entries after the snapshot too (acknowledged ones); ours must replay them."""
    data_dir = tmp_path / "n0"
    address = f"127.0.0.1:{free_port()}"  # the same across the restart (the snapshot names it)

    def lone_node() -> tuple[RaftNode, StateMachine]:
        machine = StateMachine()
        snapshots = SnapshotFiles(machine)
        conf = build_conf(data_dir, snapshots, 8, 300.0, RaftTuning())
        return RaftNode(address, [], machine, conf, snapshots), machine

    # Every compaction "crashes" right after the snapshot's rename: the journal stays whole.
    monkeypatch.setattr(SyncedJournal, "deleteEntriesTo", lambda self, entry_to: None)
    node, machine = lone_node()
    try:
        wait_for(node.is_leader, 10, "the lone node to lead")
        done = threading.Semaphore(0)
        for i in range(40):
            node.apply_command(spool(i), callback=lambda *_: done.release())
            assert done.acquire(timeout=20)
        wait_for(lambda: (data_dir / "raft.snapshot").exists(), 10, "a snapshot")
        assert node.journal[0][1] == 1  # never compacted
    finally:
        node.destroy_synchronous()
    monkeypatch.undo()
    restarted, machine = lone_node()
    replayed: list[int] = []
    machine.add_listener(lambda _command, outcome: replayed.append(outcome.index))
    try:
        wait_for(lambda: "f39" in dump(machine), 10, "the entries after the snapshot")
        assert all(f"'f{i}'" in dump(machine) for i in range(40))
        # The snapshot was loaded: only the entries after it were replayed.
        assert replayed and min(replayed) > 8, replayed
    finally:
        restarted.destroy_synchronous()
