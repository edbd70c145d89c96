"""Who may see a job's owner and file name over OPC UA: as REST, a `user` only their own.

Operators and admins see every value; `user` sessions only those of their own jobs;
anonymous sessions (and every session on a security None channel) none. `Privacy.owners`
names the owner of each private node (the address space keeps it as it writes the values:
a job's Owner and FileName, a printer's CurrentJob/Owner). Each remote session is a
`PrivateSession`, which answers, for the Value of a private node its user may not see:

- Read (by node id, or one TranslateBrowsePathsToNodeIds found): BadUserAccessDenied, and
  a UserAccessLevel of 0;
- CreateMonitoredItems: BadUserAccessDenied for that item;
- an existing monitored item whose node becomes another user's (a printer starts another
  user's job): a notification with BadUserAccessDenied and no value, decided per
  notification for the user of the session that holds the subscription now;
- HistoryRead of a private node: BadUserAccessDenied (users and anonymous sessions).

Republish answers only for the session's own subscriptions (with the status codes Part 4
gives for an unknown subscription and a message no longer held), and TransferSubscriptions only
takes a subscription made by the same user, so no session gets another's notifications.
Browse still shows the nodes. The farm's events carry job and printer ids and statuses,
never an owner or a file name.
"""

from __future__ import annotations

import dataclasses
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from asyncua import Server, ua
from asyncua.common.callback import CallbackType, ServerItemCallback
from asyncua.common.utils import ServiceError
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.internal_session import InternalSession, SessionState
from asyncua.server.internal_subscription import InternalSubscription

from mes.auth.principal import Principal
from mes.opcua.continuation import ContinuationPoints
from mes.opcua.history import FarmHistory
from mes.opcua.limits import within
from mes.opcua.session_limits import admit_anonymous, admit_unsigned, is_anonymous

T = TypeVar("T")
R = TypeVar("R")

# The owner of private data no user owns (a job without an owner): operators and admins
# only (no user id is empty).
NOBODY = ""
_VALUE = ua.AttributeIds.Value
_USER_ACCESS = ua.AttributeIds.UserAccessLevel
_USER_EXECUTABLE = ua.AttributeIds.UserExecutable
_DENIED = ua.StatusCodes.BadUserAccessDenied


def principal_of(user: Any) -> Principal | None:
    """The farm account a session acts as (None: anonymous)."""
    who = getattr(user, "principal", None)
    return who if isinstance(who, Principal) else None


def _denied() -> ua.DataValue:
    return ua.DataValue(StatusCode=ua.StatusCode(_DENIED))


class Privacy:
    """The owners of a server's private nodes, and its remote sessions."""

    def __init__(self) -> None:
        # Private node -> the user who may read its Value (NOBODY: staff only; None: it
        # shows nothing private now, such as an idle printer's CurrentJob/Owner).
        self.owners: dict[ua.NodeId, str | None] = {}
        self.sessions: weakref.WeakValueDictionary[Any, PrivateSession] = (
            weakref.WeakValueDictionary())
        # Subscription -> the user id of the session that made it (None: anonymous).
        self.makers: weakref.WeakKeyDictionary[InternalSubscription, str | None] = (
            weakref.WeakKeyDictionary())
        # False until the farm's nodes exist: a client that made its session (and monitored
        # items) before then would find none of them and, node-opcua after a reconnect,
        # never ask again. Set by the embedded server once the farm is built.
        self.farm_built = True
        # Method -> the least role that may call it: its UserExecutable per session.
        self.method_roles: dict[ua.NodeId, str] = {}
        # What serves HistoryRead once the farm is built (None: asyncua's, which has none).
        self.history: FarmHistory | None = None

    @classmethod
    def of(cls, server: Server) -> Privacy:
        """The server's Privacy (made on first use)."""
        found = getattr(server.iserver, "mes_privacy", None)
        if not isinstance(found, Privacy):
            found = cls()
            server.iserver.mes_privacy = found
        return found

    def hidden(self, who: Principal | None, nodeid: ua.NodeId, attribute: int) -> bool:
        """Whether `who` may not see this attribute of the node."""
        owner = self.owners.get(nodeid)
        return (owner is not None and attribute == _VALUE
                and (who is None or not (who.staff or who.user_id == owner)))

    def reader(self, subscription: InternalSubscription) -> Principal | None:
        """The user of the session that holds `subscription` now (None: anonymous or gone)."""
        session = self.sessions.get(subscription.session_id)
        return session.principal if session is not None else None

    def guard(self, subscription: InternalSubscription) -> None:
        """Mask every value change `subscription` would receive but its reader may not see
        (before the change filter, so a hidden value changing again sends nothing)."""
        service = subscription.monitored_item_srv
        deliver = service.datachange_callback
        owners = self.owners

        async def datachange_callback(handle: int, value: ua.DataValue,
                                      error: ua.StatusCode | None = None) -> None:
            if error is None:
                item = service._monitored_items.get(service._monitored_datachange.get(handle))
                target = item.read_value_id if item is not None else None
                if (target is not None and target.NodeId in owners and self.hidden(
                        self.reader(subscription), target.NodeId, target.AttributeId)):
                    value = _denied()
            await deliver(handle, value, error)

        # The monitored items register this attribute (looked up per item when made).
        setattr(service, "datachange_callback", datachange_callback)  # noqa: B010


async def _split(items: Sequence[T], refused: Sequence[bool],
                 forward: Callable[[list[T]], Awaitable[list[R]]], result: Callable[..., R],
                 ) -> list[R]:
    """`forward` the items not refused; the results in the items' order, a `result` with
    BadUserAccessDenied for each refused item."""
    allowed = [item for item, no in zip(items, refused, strict=True) if not no]
    answers = iter(await forward(allowed) if allowed else [])
    return [result(StatusCode=ua.StatusCode(_DENIED)) if no else next(answers)
            for no in refused]


class PrivateSession(InternalSession):  # type: ignore[misc]
    """A remote session: reads, monitors and receives only what its user may see."""

    def __init__(self, privacy: Privacy, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.privacy = privacy
        self.continuation_points = ContinuationPoints()
        self.created_at = time.monotonic()
        privacy.sessions[self.session_id] = self

    def activate_session(self, params: ua.ActivateSessionParameters,
                         peer_certificate: bytes | None) -> ua.ActivateSessionResult:
        """asyncua's, with at most session_limits.ANONYMOUS anonymous sessions at once."""
        if self.state == SessionState.Created and is_anonymous(params.UserIdentityToken):
            admit_anonymous(list(self.privacy.sessions.values()), self)
        return super().activate_session(params, peer_certificate)

    @property
    def principal(self) -> Principal | None:
        """The farm account the session acts as now (None: anonymous)."""
        return principal_of(self.user)

    async def browse(self, params: ua.BrowseParameters) -> list[ua.BrowseResult]:
        """InternalSession.browse within OperationLimits, with RequestedMaxReferencesPerNode
        honoured (the rest through BrowseNext)."""
        within("MaxNodesPerBrowse", len(params.NodesToBrowse))
        results: list[ua.BrowseResult] = await super().browse(params)
        self.continuation_points.cap(results, params.RequestedMaxReferencesPerNode)
        return results

    async def browse_next(self, parameters: ua.BrowseNextParameters) -> list[ua.BrowseResult]:
        """The references a Browse still owes (asyncua has no BrowseNext)."""
        within("MaxNodesPerBrowse", len(parameters.ContinuationPoints))
        return self.continuation_points.next(parameters)

    async def translate_browsepaths_to_nodeids(self, params: list[ua.BrowsePath]
                                               ) -> list[ua.BrowsePathResult]:
        within("MaxNodesPerTranslateBrowsePathsToNodeIds", len(params))
        found: list[ua.BrowsePathResult] = await super().translate_browsepaths_to_nodeids(params)
        return found

    async def write(self, params: ua.WriteParameters) -> list[ua.StatusCode]:
        within("MaxNodesPerWrite", len(params.NodesToWrite))
        written: list[ua.StatusCode] = await super().write(params)
        return written

    async def call(self, params: list[ua.CallMethodRequest]) -> list[ua.CallMethodResult]:
        within("MaxNodesPerMethodCall", len(params))
        called: list[ua.CallMethodResult] = await super().call(params)
        return called

    async def read(self, params: ua.ReadParameters) -> list[ua.DataValue]:
        """InternalSession.read, with what the user may not see masked in the same step
        as it is read (a value and its owner always change together)."""
        within("MaxNodesPerRead", len(params.NodesToRead))
        user = self.user or User()
        callbacks = self.iserver.callback_service
        await callbacks.dispatch(CallbackType.PreRead,
                                 ServerItemCallback(params, None, user, self.external))
        results: list[ua.DataValue] = self.iserver.attribute_service.read(params)
        who, privacy = self.principal, self.privacy
        for index, item in enumerate(params.NodesToRead):
            if privacy.hidden(who, item.NodeId, item.AttributeId):
                results[index] = _denied()
            elif item.AttributeId == _USER_ACCESS and privacy.hidden(who, item.NodeId, _VALUE):
                results[index] = ua.DataValue(ua.Variant(0, ua.VariantType.Byte))
            elif item.AttributeId == _USER_EXECUTABLE and item.NodeId in privacy.method_roles:
                role = privacy.method_roles[item.NodeId]
                results[index] = ua.DataValue(ua.Variant(
                    who is not None and who.at_least(role), ua.VariantType.Boolean))
        await callbacks.dispatch(CallbackType.PostRead,
                                 ServerItemCallback(params, results, user, self.external))
        return results

    async def history_read(self, params: ua.HistoryReadParameters
                           ) -> list[ua.HistoryReadResult]:
        """The farm's history (mes.opcua.history); none of a private node for users and
        anonymous sessions."""
        events = isinstance(params.HistoryReadDetails, ua.ReadEventDetails)
        within("MaxNodesPerHistoryReadEvents" if events else "MaxNodesPerHistoryReadData",
               len(params.NodesToRead))
        who, owners = self.principal, self.privacy.owners
        staff = who is not None and who.staff
        history = self.privacy.history

        async def forward(items: list[Any]) -> list[ua.HistoryReadResult]:
            asked = dataclasses.replace(params, NodesToRead=items)
            if history is not None:
                return await history.history_read(asked)
            found: list[ua.HistoryReadResult] = await super(PrivateSession, self).history_read(
                asked)
            return found

        return await _split(params.NodesToRead,
                            [not staff and item.NodeId in owners for item in params.NodesToRead],
                            forward, ua.HistoryReadResult)

    async def create_monitored_items(self, params: ua.CreateMonitoredItemsParameters
                                     ) -> list[ua.MonitoredItemCreateResult]:
        """BadUserAccessDenied for each item on a value the user may not see now."""
        within("MaxMonitoredItemsPerCall", len(params.ItemsToCreate))
        who, privacy = self.principal, self.privacy
        refused = [privacy.hidden(who, item.ItemToMonitor.NodeId, item.ItemToMonitor.AttributeId)
                   for item in params.ItemsToCreate]
        if any(refused) and params.SubscriptionId not in self.subscription_service.subscriptions:
            raise ServiceError(ua.StatusCodes.BadSubscriptionIdInvalid)

        async def forward(items: list[Any]) -> list[ua.MonitoredItemCreateResult]:
            made: list[ua.MonitoredItemCreateResult] = await super(
                PrivateSession, self).create_monitored_items(
                    dataclasses.replace(params, ItemsToCreate=items))
            return made

        return await _split(params.ItemsToCreate, refused, forward, ua.MonitoredItemCreateResult)

    async def create_subscription(self, params: ua.CreateSubscriptionParameters,
                                  callback: Callable[..., Any],
                                  request_callback: Callable[..., Any] | None = None,
                                  ) -> ua.CreateSubscriptionResult:
        """A subscription whose notifications are masked for its reader."""
        result = await super().create_subscription(params, callback, request_callback)
        subscription = self.subscription_service.subscriptions.get(result.SubscriptionId)
        if subscription is not None:
            self.privacy.guard(subscription)
            who = self.principal
            self.privacy.makers[subscription] = who.user_id if who is not None else None
        return result

    def republish(self, params: ua.RepublishParameters) -> ua.NotificationMessage:
        """Only the session's own notifications, answered as Part 4 (5.13.6) says: an
        unknown subscription is Bad_SubscriptionIdInvalid and a message no longer held is
        Bad_MessageNotAvailable. asyncua 2.1 answers both with Good and an empty message,
        and a client that lost messages (node-opcua after a reconnect) asks again forever,
        about 40 times a second, receiving nothing else."""
        subscription = self.subscription_service.subscriptions.get(params.SubscriptionId)
        if subscription is None or subscription.session_id != self.session_id:
            raise ServiceError(ua.StatusCodes.BadSubscriptionIdInvalid)
        held = getattr(subscription, "_not_acknowledged_results", None)
        if isinstance(held, dict) and params.RetransmitSequenceNumber not in held:
            raise ServiceError(ua.StatusCodes.BadMessageNotAvailable)
        return super().republish(params)

    async def transfer_subscriptions(self, params: ua.TransferSubscriptionsParameters,
                                     callback: Callable[..., Any]) -> list[ua.TransferResult]:
        """Only subscriptions the same user made (their unacknowledged notifications come
        along): BadUserAccessDenied for the others."""
        who = self.principal
        mine = who.user_id if who is not None else None
        subscriptions, makers = self.subscription_service.subscriptions, self.privacy.makers
        refused = []
        for sub_id in params.SubscriptionIds:
            subscription = subscriptions.get(int(sub_id))
            refused.append(subscription is not None and (
                subscription not in makers or makers[subscription] != mine))

        async def forward(ids: list[Any]) -> list[ua.TransferResult]:
            moved: list[ua.TransferResult] = await super(
                PrivateSession, self).transfer_subscriptions(
                    dataclasses.replace(params, SubscriptionIds=ids), callback)
            return moved

        return await _split(params.SubscriptionIds, refused, forward, ua.TransferResult)


def guard_sessions(server: Server) -> Privacy:
    """Make every remote session of `server` a PrivateSession; returns its Privacy."""
    privacy = Privacy.of(server)
    iserver = server.iserver

    def create_session(name: str, user: Any = None, external: bool = False) -> Any:
        user = user if user is not None else User(role=UserRole.Anonymous)
        if not external:
            return InternalSession(iserver, iserver.aspace, iserver.subscription_service,
                                   name, user=user, external=external)
        if not privacy.farm_built:
            raise ServiceError(ua.StatusCodes.BadServerHalted)  # not yet up: try again
        admit_unsigned(list(privacy.sessions.values()))
        return PrivateSession(privacy, iserver, iserver.aspace, iserver.subscription_service,
                              name, user=user, external=external)

    setattr(iserver, "create_session", create_session)  # noqa: B010 - this server only
    return privacy
