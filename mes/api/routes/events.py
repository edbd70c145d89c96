"""`/api/v1/events`: the farm's change events as Server-Sent Events, filtered by role."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Header, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import Field

from mes.api.auth import Caller, authenticated_router, request_token
from mes.api.deps import NodeDep
from mes.auth.authenticator import AuthError
from mes.events.hub import Subscriber, TelemetryView, parse_id, visible_to
from mes.events.stream import accepts_gzip, gzipped, reload_message, stream

router = authenticated_router("/events", "events")

HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
MAX_PRINTERS = 200
STREAM_RESPONSE: dict[int | str, dict[str, Any]] = {200: {
    "description": "an endless text/event-stream (see docs/api.md, Events)",
    "content": {"text/event-stream": {"schema": {"type": "string"}}}}}


@router.get("", response_class=StreamingResponse, responses=STREAM_RESPONSE)
async def events(
    request: Request, node: NodeDep, who: Caller,
    last_event_id: Annotated[str | None, Header(max_length=40)] = None,
    after: Annotated[str | None, Query(max_length=40, description=(
        "resume after this event id (as the Last-Event-ID header, which wins)"))] = None,
    telemetry: Annotated[bool, Query(description=(
        "also stream printers' telemetry (live only: no id, the latest per printer)"))] = True,
    printers: Annotated[list[Annotated[str, Field(max_length=64)]] | None, Query(
        alias="printer", max_length=MAX_PRINTERS, description=(
            "telemetry of only these printers (repeat `printer`, at most "
            f"{MAX_PRINTERS}); with `states`, the others' state changes too"))] = None,
    states: Annotated[bool, Query(description=(
        "telemetry of every printer only when its state changes (besides the `printer`s "
        "in full): what an overview needs"))] = False,
) -> StreamingResponse:
    """Every change of the farm's state as it is applied on this node: `change` events
    with ids `<raft index>-<n>` (the same on every node: resume on any node with
    `Last-Event-ID`), `telemetry` events without id, `hello` with the current position on a
    fresh connection, and `reload` (then the stream closes) when this node cannot resume
    from the given id: read the state again and reconnect without an id. Users see printers,
    spools and their own jobs and orders; operators and admins see everything."""
    settings = node.settings.events
    resume = last_event_id or after
    key = parse_id(resume) if resume else None
    credentials = request_token(request) or ""  # the bearer token or the session cookie

    async def still_allowed() -> bool:
        """The token still signs in, as the same user with the same role."""
        try:
            now = await node.auth.principal(credentials, fresh=True)
        except AuthError:
            return False
        return now.user_id == who.user_id and now.role == who.role

    if resume and key is None:
        async def refuse() -> Any:
            yield f"retry: {settings.retry_ms}\n\n"
            yield reload_message("this is not an event id of this farm")
        body: Any = refuse()
    else:
        view: bool | TelemetryView = telemetry
        if telemetry and (printers or states):
            view = TelemetryView(every=False, printers=frozenset(printers or ()), states=states)
        subscriber = Subscriber(visible_to(who.user_id, who.staff), view,
                                node.events.capacity)
        body = stream(node.events, subscriber, key, settings.retry_ms,
                      settings.keepalive, settings.resume_wait, still_allowed)
    headers = dict(HEADERS)
    if accepts_gzip(request.headers.get("accept-encoding")):
        # Telemetry repeats its keys in every event: gzip, flushed per event, takes a page's
        # stream to a fraction of its size.
        body = gzipped(body)
        headers.update({"Content-Encoding": "gzip", "Vary": "Accept-Encoding"})
    return StreamingResponse(body, media_type="text/event-stream", headers=headers)
