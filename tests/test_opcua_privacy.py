"""OPC UA privacy: as REST, a `user` session sees the owner and file name of its own jobs
only (Read, TranslateBrowsePath then Read, CreateMonitoredItems, existing subscriptions,
HistoryRead); operators see every job's; anonymous sessions none."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client, Node, ua

from mes.opcua.privacy import Privacy
from mes.state.ops import Op
from tests.farm_helpers import eventually, upload
from tests.opcua_farm import Farm, opcua_farm
from tests.opcua_secured import PASSWORD, POLICIES, client_certificate

FARM_URI = "http://mes-printfarm.org/UA/PrintFarm/"
CLIENT_URI = "urn:mes-tests:opcua-client"
DENIED = ua.StatusCodes.BadUserAccessDenied
FILES = {"alice": "alice-secret-part.gcode", "bob": "bob-secret-part.gcode"}


@dataclass
class Secured:
    """The farm (alice and bob: users, olga: operator) and a client certificate."""

    farm: Farm
    cert: Path
    key: Path

    async def connected(self, user: str | None, policy: str | None = "Basic256Sha256",
                        ) -> Client:
        """A client as `user` (None: anonymous) over `policy` SignAndEncrypt (None: none)."""
        client = Client(self.farm.url, timeout=30, watchdog_intervall=10)
        client.application_uri = CLIENT_URI
        if user is not None:
            client.set_user(user)
            client.set_password(PASSWORD)
        if policy is not None:
            await client.set_security(POLICIES[policy], str(self.cert), str(self.key),
                                      mode=ua.MessageSecurityMode.SignAndEncrypt)
        return client


@pytest.fixture
async def farm(tmp_path: Path) -> AsyncIterator[Secured]:
    cert, key = await client_certificate(tmp_path / "client", CLIENT_URI)
    async with opcua_farm(tmp_path, {"alice": "user", "bob": "user", "olga": "operator"},
                          printer=True, opcua_allow_anonymous=True,
                          mock_printer_job_time=600) as farm:
        yield Secured(farm, cert, key)


async def _create_job(farm: Farm, job_id: str, owner: str, **extra: Any) -> None:
    """A job of `owner` (committed by the farm itself, as REST would for that user)."""
    args = {"id": job_id, "filament_id": "pla", "print_weight_in_grams": 5,
            "filepath": FILES[owner], "owner_id": owner, **extra}
    outcome = await farm.node.writer.submit(Op.JOB_CREATE, args)
    assert outcome.ok, outcome.error


async def _read(client: Client, *nodes: ua.NodeId) -> list[ua.DataValue]:
    """The Values of `nodes` in one Read request, bad status codes included."""
    params = ua.ReadParameters(NodesToRead=[
        ua.ReadValueId(NodeId=nid, AttributeId=ua.AttributeIds.Value) for nid in nodes])
    values: list[ua.DataValue] = await client.uaclient.read(params)
    return values


def _shown(values: list[ua.DataValue]) -> list[Any]:
    """Each value, or the name of its bad status code."""
    return [v.Value.Value if v.StatusCode.is_good() else v.StatusCode.name for v in values]


async def _history(client: Client, nid: ua.NodeId) -> ua.StatusCode:
    details = ua.ReadRawModifiedDetails(IsReadModified=False, NumValuesPerNode=10,
                                        ReturnBounds=False)
    params = ua.HistoryReadParameters(
        HistoryReadDetails=details, TimestampsToReturn=ua.TimestampsToReturn.Both,
        NodesToRead=[ua.HistoryReadValueId(NodeId=nid)])
    results = await client.uaclient.history_read(params)
    status: ua.StatusCode = results[0].StatusCode
    return status


class Values:
    """A subscription handler that keeps each notification's value or bad status."""

    def __init__(self) -> None:
        self.seen: list[Any] = []

    def datachange_notification(self, node: Node, value: Any, data: Any) -> None:
        dv = data.monitored_item.Value
        self.seen.append(value if dv.StatusCode.is_good() else dv.StatusCode.name)


async def test_a_user_reads_and_monitors_only_their_own_jobs_owner_and_file(
        farm: Secured) -> None:
    await _create_job(farm.farm, "a-1", "alice")
    await _create_job(farm.farm, "b-1", "bob")
    async with await farm.connected("olga") as olga:
        ns = (await olga.get_namespace_array()).index(FARM_URI)

        def job(job_id: str, name: str) -> ua.NodeId:
            return ua.NodeId(f"Jobs/{job_id}/{name}", ns)

        private = [job("a-1", "Owner"), job("a-1", "FileName"),
                   job("b-1", "Owner"), job("b-1", "FileName")]
        everything = ["alice", FILES["alice"], "bob", FILES["bob"]]

        async def shown() -> bool:
            return _shown(await _read(olga, *private)) == everything

        await eventually(shown, 20, "the operator to read both jobs' owners and files")

    async with await farm.connected("alice") as alice:
        status = [job("a-1", "Status"), job("b-1", "Status")]
        assert _shown(await _read(alice, *private, *status)) == [
            "alice", FILES["alice"], "BadUserAccessDenied", "BadUserAccessDenied",
            "Queued", "Queued"]
        # The same node by its browse path (TranslateBrowsePathsToNodeIds, then Read).
        by_path = await alice.nodes.objects.get_child(
            [f"{ns}:PrintFarm", f"{ns}:Jobs", f"{ns}:b-1", f"{ns}:Owner"])
        assert by_path.nodeid == job("b-1", "Owner")  # browsing still finds it
        assert _shown(await _read(alice, by_path.nodeid)) == ["BadUserAccessDenied"]
        with pytest.raises(ua.UaStatusCodeError):
            await by_path.read_value()
        assert (await _history(alice, job("b-1", "FileName"))).value == DENIED
        access = await alice.uaclient.read(ua.ReadParameters(NodesToRead=[
            ua.ReadValueId(NodeId=job(j, "Owner"), AttributeId=ua.AttributeIds.UserAccessLevel)
            for j in ("a-1", "b-1")]))
        assert _shown(access) == [ua.AccessLevel.CurrentRead.mask, 0]

        handler = Values()
        subscription = await alice.create_subscription(20, handler)
        made = await subscription.subscribe_data_change(
            [alice.get_node(nid) for nid in private])
        assert [m.value if isinstance(m, ua.StatusCode) else "made" for m in made] == [
            "made", "made", DENIED, DENIED]

        async def both_own() -> bool:
            return sorted(handler.seen) == sorted(["alice", FILES["alice"]])

        await eventually(both_own, 10, "alice's own owner and file name by subscription")
        await subscription.delete()

    async with await farm.connected("bob") as bob:
        assert _shown(await _read(bob, *private)) == [
            "BadUserAccessDenied", "BadUserAccessDenied", "bob", FILES["bob"]]

    async with await farm.connected(None, policy=None) as anonymous:
        assert _shown(await _read(anonymous, *private)) == ["BadUserAccessDenied"] * 4
        assert _shown(await _read(anonymous, *status)) == ["Queued", "Queued"]
    # Signed in on a security None channel: reads as anonymous (the values travel in clear).
    async with await farm.connected("alice", policy=None) as in_clear:
        assert _shown(await _read(in_clear, *private)) == ["BadUserAccessDenied"] * 4

    async with await farm.connected("olga") as olga:
        assert _shown(await _read(olga, *private)) == everything
        assert (await _history(olga, job("b-1", "FileName"))).value != DENIED

    # The owners are kept by the address space, node by node.
    opcua = farm.farm.node.opcua
    assert opcua is not None
    owners = Privacy.of(opcua.server).owners
    assert {nid: owners[nid] for nid in private} == dict(zip(
        private, ["alice", "alice", "bob", "bob"], strict=True))


async def test_a_subscription_never_receives_another_users_job_owner(farm: Secured) -> None:
    """Alice watches the idle printer's CurrentJob/Owner (nothing private yet); Bob's job
    starts there: she gets BadUserAccessDenied, never his name; the operator gets it."""
    async with await farm.connected("alice") as alice, \
            await farm.connected("olga") as olga:
        ns = (await alice.get_namespace_array()).index(FARM_URI)
        owner = ua.NodeId("Printers/m1/CurrentJob/Owner", ns)
        assert _shown(await _read(alice, owner)) == [""]
        watched, by_operator = Values(), Values()
        for client, handler in ((alice, watched), (olga, by_operator)):
            subscription = await client.create_subscription(20, handler)
            assert isinstance(await subscription.subscribe_data_change(
                client.get_node(owner)), int)

        stored = await upload(farm.farm.api)
        await _create_job(farm.farm, "b-run", "bob", file_id=stored["id"], printer_id="m1")

        async def bob_running() -> bool:
            return "bob" in by_operator.seen

        await eventually(bob_running, 30, "bob's job to run on m1 (the operator sees it)")
        await eventually(lambda: _true(len(watched.seen) >= 2), 10,
                         "alice's subscription to hear of the new owner")
        assert watched.seen == ["", "BadUserAccessDenied"], watched.seen
        assert _shown(await _read(alice, owner)) == ["BadUserAccessDenied"]
        assert _shown(await _read(olga, owner)) == ["bob"]
        # A new monitored item on it is refused too.
        again = await alice.create_subscription(20, Values())
        refused = await again.subscribe_data_change([alice.get_node(owner)])
        assert [r.value if isinstance(r, ua.StatusCode) else r for r in refused] == [DENIED]
        assert "bob" not in watched.seen, watched.seen


async def _true(value: bool) -> bool:
    return value


async def test_republish_answers_as_part_4_says(farm: Secured) -> None:
    """An unknown subscription is Bad_SubscriptionIdInvalid and a message the server no
    longer holds Bad_MessageNotAvailable (asyncua 2.1 answered Good with an empty message,
    and node-opcua asked again about 40 times a second after a reconnect); a message still
    held comes back whole."""
    await _create_job(farm.farm, "r-1", "alice")
    async with await farm.connected("alice") as alice:
        ns = (await alice.get_namespace_array()).index(FARM_URI)
        handler = Values()
        subscription = await alice.create_subscription(20, handler)
        await subscription.subscribe_data_change(alice.get_node(ua.NodeId("Jobs/r-1/Owner", ns)))
        await eventually(lambda: _true("alice" in handler.seen), 20, "the first notification")
        session = alice.uaclient.session
        with pytest.raises(ua.UaStatusCodeError) as unknown:
            await session.republish(subscription.subscription_id + 1000, 1)
        assert unknown.value.code == ua.StatusCodes.BadSubscriptionIdInvalid
        with pytest.raises(ua.UaStatusCodeError) as gone:
            await session.republish(subscription.subscription_id, 10_000)
        assert gone.value.code == ua.StatusCodes.BadMessageNotAvailable
        # asyncua keeps each sent message until the client acknowledges it (pinned here:
        # the check above reads that store): the first one is held or acknowledged.
        embedded = farm.farm.node.opcua
        assert embedded is not None
        held = embedded.server.iserver.subscription_service.subscriptions[
            subscription.subscription_id]._not_acknowledged_results
        assert isinstance(held, dict)
        for number in list(held):
            again = await session.republish(subscription.subscription_id, number)
            assert again.SequenceNumber == number and again.NotificationData


async def test_no_session_takes_another_users_notifications(farm: Secured) -> None:
    """Republish answers a session only for its own subscriptions; TransferSubscriptions
    moves only a subscription the same user made (its queued notifications come along)."""
    await _create_job(farm.farm, "b-1", "bob")
    async with await farm.connected("olga") as olga, \
            await farm.connected("alice") as alice, \
            await farm.connected("olga") as olga_again:
        ns = (await olga.get_namespace_array()).index(FARM_URI)
        owner = ua.NodeId("Jobs/b-1/Owner", ns)
        handler = Values()
        subscription = await olga.create_subscription(20, handler)
        await subscription.subscribe_data_change(olga.get_node(owner))
        await eventually(lambda: _true("bob" in handler.seen), 20, "olga to see bob's job")
        sub_id = subscription.subscription_id

        with pytest.raises(ua.UaStatusCodeError) as refused:
            await alice.uaclient.session.republish(sub_id, 1)
        assert refused.value.code == ua.StatusCodes.BadSubscriptionIdInvalid

        def transfer(ids: list[int]) -> ua.TransferSubscriptionsParameters:
            return ua.TransferSubscriptionsParameters(SubscriptionIds=ids,
                                                      SendInitialValues=False)

        taken = await alice.uaclient.transfer_subscriptions(transfer([sub_id]))
        assert [r.StatusCode.value for r in taken] == [DENIED]
        moved = await olga_again.uaclient.transfer_subscriptions(transfer([sub_id]))
        assert [r.StatusCode.is_good() for r in moved] == [True]


async def _session_refused(client: Client) -> bool:
    """Whether the server no longer serves the client's session."""
    try:
        await client.nodes.server.read_browse_name()
    except ua.UaStatusCodeError as exc:
        return exc.code in (ua.StatusCodes.BadSessionIdInvalid,
                            ua.StatusCodes.BadSessionClosed,
                            ua.StatusCodes.BadSessionNotActivated)
    return False


async def test_sessions_end_when_their_account_is_disabled_or_loses_its_role(
        farm: Secured) -> None:
    """Disabling alice and making olga a plain user close their sessions once applied
    (olga must sign in again, as what she is now); bob's session is untouched."""
    api = farm.farm.api
    async with await farm.connected("alice") as alice, \
            await farm.connected("bob") as bob, \
            await farm.connected("olga") as olga:
        for client in (alice, bob, olga):
            assert not await _session_refused(client)
        disabled = await api.patch("/api/v1/users/alice", json={"disabled": True})
        assert disabled.status_code == 200, disabled.text
        demoted = await api.patch("/api/v1/users/olga", json={"role": "user"})
        assert demoted.status_code == 200, demoted.text
        await eventually(lambda: _session_refused(alice), 20, "alice's session to end")
        await eventually(lambda: _session_refused(olga), 20, "olga's session to end")
        assert not await _session_refused(bob)
    async with await farm.connected("olga") as again:  # signs in again, as a user now
        assert not await _session_refused(again)


async def test_sessions_that_never_sign_in_are_capped(farm: Secured) -> None:
    """CreateSession without ActivateSession holds a session asyncua never times out:
    after UNSIGNED of them the next is refused, and a signed-in client still works."""
    from mes.opcua.session_limits import UNSIGNED

    opened: list[Client] = []
    try:
        for _ in range(UNSIGNED):
            client = Client(farm.farm.url, timeout=30)
            await client.connect_socket()
            opened.append(client)
            await client.send_hello()
            await client.open_secure_channel()
            await client.create_session()
        extra = Client(farm.farm.url, timeout=30)
        await extra.connect_socket()
        opened.append(extra)
        await extra.send_hello()
        await extra.open_secure_channel()
        with pytest.raises(ua.UaStatusCodeError) as refused:
            await extra.create_session()
        assert refused.value.code == ua.StatusCodes.BadTooManySessions
    finally:
        for client in opened:
            with contextlib.suppress(Exception):
                await client.close_secure_channel()
            client.disconnect_socket()
