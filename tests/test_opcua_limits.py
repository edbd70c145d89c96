"""The embedded server's OperationLimits are announced and enforced, and a Browse that
caps its references per node continues through BrowseNext (asyncua had no BrowseNext)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from asyncua import Client, ua
from asyncua.ua.ua_binary import struct_from_binary
from asyncua.ua.uaerrors import BadTooManyOperations

from mes.opcua.limits import MAX_BROWSE_CONTINUATION_POINTS, OPERATION_LIMITS
from tests.farm_helpers import eventually
from tests.opcua_farm import Farm, opcua_farm


@pytest.fixture
async def farm(tmp_path: Path) -> AsyncIterator[Farm]:
    async with opcua_farm(tmp_path, opcua_allow_anonymous=True) as farm:
        yield farm


def _browse(node: ua.NodeId, per_node: int) -> ua.BrowseParameters:
    params = ua.BrowseParameters()
    params.RequestedMaxReferencesPerNode = per_node
    params.NodesToBrowse = [ua.BrowseDescription(
        NodeId=node, BrowseDirection=ua.BrowseDirection.Both,
        ReferenceTypeId=ua.NodeId(ua.ObjectIds.References), IncludeSubtypes=True,
        NodeClassMask=0, ResultMask=63)]
    return params


def _next(points: list[bytes], release: bool = False) -> ua.BrowseNextParameters:
    return ua.BrowseNextParameters(ReleaseContinuationPoints=release,
                                   ContinuationPoints=points)


async def test_limits_are_announced_and_enforced(farm: Farm) -> None:
    async with Client(farm.url, timeout=30) as client:
        limits = await client.nodes.server.get_child(["0:ServerCapabilities",
                                                      "0:OperationLimits"])
        for name, value in OPERATION_LIMITS.items():
            assert await (await limits.get_child(f"0:{name}")).read_value() == value, name
        points = await client.nodes.server.get_child(["0:ServerCapabilities",
                                                      "0:MaxBrowseContinuationPoints"])
        assert await points.read_value() == MAX_BROWSE_CONTINUATION_POINTS
        too_many = ua.ReadParameters()
        too_many.NodesToRead = [ua.ReadValueId(NodeId=ua.NodeId(ua.ObjectIds.Server),
                                               AttributeId=ua.AttributeIds.BrowseName)
                                ] * (OPERATION_LIMITS["MaxNodesPerRead"] + 1)
        with pytest.raises(BadTooManyOperations):
            await client.uaclient.read(too_many)
        # The session survives a refused request.
        assert (await client.nodes.server.read_browse_name()).Name == "Server"


async def test_a_capped_browse_continues_through_browse_next(farm: Farm) -> None:
    server = ua.NodeId(ua.ObjectIds.Server)
    async with Client(farm.url, timeout=30) as client:
        everything = (await client.uaclient.browse(_browse(server, 0)))[0].References
        assert len(everything) > 5
        first = (await client.uaclient.browse(_browse(server, 2)))[0]
        assert len(first.References) == 2 and first.ContinuationPoint
        found, point = list(first.References), first.ContinuationPoint
        while point:
            page = (await client.uaclient.browse_next(_next([point])))[0]
            assert page.StatusCode.is_good() and 0 < len(page.References) <= 2
            found += page.References
            point = page.ContinuationPoint
        assert [r.NodeId for r in found] == [r.NodeId for r in everything]
        # A used point is gone; a released one too; an unknown one was never valid.
        used = (await client.uaclient.browse_next(_next([first.ContinuationPoint])))[0]
        assert used.StatusCode.name == "BadContinuationPointInvalid"
        again = (await client.uaclient.browse(_browse(server, 1)))[0]
        released = (await client.uaclient.browse_next(
            _next([again.ContinuationPoint], release=True)))[0]
        assert released.StatusCode.is_good() and released.References == []
        gone = (await client.uaclient.browse_next(_next([again.ContinuationPoint])))[0]
        assert gone.StatusCode.name == "BadContinuationPointInvalid"
        # A session holds a bounded number of points: the oldest goes first.
        points = [(await client.uaclient.browse(_browse(server, 1)))[0].ContinuationPoint
                  for _ in range(MAX_BROWSE_CONTINUATION_POINTS + 1)]
        answers = await client.uaclient.browse_next(_next(points, release=True))
        assert answers[0].StatusCode.name == "BadContinuationPointInvalid"
        assert all(a.StatusCode.is_good() for a in answers[1:])


async def test_one_browse_never_releases_the_points_it_hands_out(farm: Farm) -> None:
    async with Client(farm.url, timeout=30) as client:
        nodes = [ua.NodeId(ua.ObjectIds.Server), ua.NodeId(ua.ObjectIds.ObjectsFolder),
                 ua.NodeId(ua.ObjectIds.TypesFolder)] * 7  # each with several references
        params = _browse(nodes[0], 1)
        params.NodesToBrowse = params.NodesToBrowse * len(nodes)
        results = await client.uaclient.browse(params)
        given = [r.ContinuationPoint for r in results if r.ContinuationPoint]
        assert len(given) == MAX_BROWSE_CONTINUATION_POINTS
        assert [r.StatusCode.name for r in results[MAX_BROWSE_CONTINUATION_POINTS:]] == [
            "BadNoContinuationPoints"] * (len(nodes) - MAX_BROWSE_CONTINUATION_POINTS)
        pages = await client.uaclient.browse_next(_next(given))
        assert all(p.StatusCode.is_good() and p.References for p in pages)


async def _cancel(client: Client, handle: int) -> ua.CancelResponse:
    request = ua.CancelRequest()
    request.Parameters.RequestHandle = handle
    data = await client.uaclient.protocol.send_request(request)
    response: ua.CancelResponse = struct_from_binary(ua.CancelResponse, data)
    return response


async def test_cancel_answers_the_waiting_publish_requests_it_names(farm: Farm) -> None:
    # asyncua refused Cancel as access denied (its permissions) or unsupported.
    assert farm.node.opcua is not None
    served = farm.node.opcua.server.bserver
    assert served is not None

    def waiting() -> list[int]:
        return [r.requesthdr.RequestHandle for c in list(served.clients)
                for r in list(c.processor._publish_requests)]

    async with Client(farm.url, timeout=30) as client:
        class Quiet:
            def datachange_notification(self, *_: object) -> None:
                pass

        await client.create_subscription(60_000, Quiet())  # its Publish requests wait

        async def one_waits() -> bool:
            return bool(waiting())

        await eventually(one_waits, 10, "a Publish request waiting at the server")
        none = await _cancel(client, 2**31 - 7)
        assert none.ResponseHeader.ServiceResult.is_good() and none.Parameters.CancelCount == 0
        handle = waiting()[0]
        one = await _cancel(client, handle)
        assert one.ResponseHeader.ServiceResult.is_good() and one.Parameters.CancelCount == 1
        assert handle not in waiting()
