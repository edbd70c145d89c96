"""Pages of list routes: `limit` and `cursor` in, the page as a JSON array, the next page in
the `Link` (rel="next") and `X-Next-Cursor` headers (absent on the last page)."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from typing import Annotated, Any

from fastapi import Query, Request, Response
from sqlalchemy import Connection

from mes.api.deps import read
from mes.api.errors import ApiError
from mes.app.ports import Farm

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
NEXT_CURSOR_HEADER = "X-Next-Cursor"

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT,
                             description=f"page size (at most {MAX_LIMIT})")]
Cursor = Annotated[str | None, Query(
    max_length=600, pattern=r"^[A-Za-z0-9_-]+$",
    description="where the page starts: the X-Next-Cursor (or Link rel=next) of the page before")]


def encode_cursor(key: Sequence[Any]) -> str:
    """An opaque cursor for the sort key of the last row of a page."""
    raw = json.dumps(list(key), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None, *types: type) -> tuple[Any, ...] | None:
    """The sort key in a cursor, checked against `types`; a 422 for anything else."""
    if cursor is None:
        return None
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        key = None
    if (not isinstance(key, list) or len(key) != len(types)
            or not all(_is(value, kind) for value, kind in zip(key, types, strict=True))):
        raise ApiError(422, "invalid_cursor", "the cursor is not one this list gave out",
                       "cursor")
    return tuple(float(v) if kind is float else v for v, kind in zip(key, types, strict=True))


def _is(value: Any, kind: type) -> bool:
    if isinstance(value, bool):
        return False
    if kind is float:
        return isinstance(value, int | float)
    return isinstance(value, kind)


def paged(request: Request, response: Response, rows: list[dict[str, Any]], limit: int,
          key: Callable[[dict[str, Any]], Sequence[Any]]) -> list[dict[str, Any]]:
    """The first `limit` of `rows` (fetched with limit + 1), with the next-page headers set."""
    if len(rows) <= limit:
        return rows
    page = rows[:limit]
    cursor = encode_cursor(key(page[-1]))
    next_url = request.url.include_query_params(cursor=cursor)
    response.headers[NEXT_CURSOR_HEADER] = cursor
    response.headers["Link"] = f'<{next_url}>; rel="next"'
    return page


async def page_by_id(request: Request, response: Response, node: Farm,
                     page: Callable[[Connection, str | None, int], list[dict[str, Any]]],
                     limit: int, cursor: str | None) -> list[dict[str, Any]]:
    """One page of a list ordered by id; `page(conn, after_id, count)` reads its rows."""
    after = decode_cursor(cursor, str)
    rows = await read(node, lambda c: page(c, after[0] if after else None, limit + 1))
    return paged(request, response, rows, limit, lambda r: [r["id"]])
