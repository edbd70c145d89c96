"""Browse continuation points of one session (Part 4, 5.8.2 and 5.8.3): a Browse that asks
for at most N references per node gets the first N and a continuation point for the rest,
which BrowseNext returns N at a time or releases."""

from __future__ import annotations

import os
from collections import OrderedDict

from asyncua import ua

from mes.opcua.limits import MAX_BROWSE_CONTINUATION_POINTS


class ContinuationPoints:
    """The references still owed for each continuation point a session holds."""

    def __init__(self, most: int = MAX_BROWSE_CONTINUATION_POINTS) -> None:
        self._owed: OrderedDict[bytes, tuple[list[ua.ReferenceDescription], int]] = (
            OrderedDict())
        self._most = most

    def __len__(self) -> int:
        return len(self._owed)

    def cap(self, results: list[ua.BrowseResult], per_node: int) -> None:
        """Keep at most `per_node` references in each result (0: no cap); the rest is owed
        under a new continuation point in the result."""
        if per_node <= 0:
            return
        made = 0
        for result in results:
            if len(result.References) > per_node:
                if made >= self._most:  # never release a point made for this same request
                    result.References = []
                    result.StatusCode = ua.StatusCode(ua.StatusCodes.BadNoContinuationPoints)
                    continue
                owed = result.References[per_node:]
                result.References = result.References[:per_node]
                result.ContinuationPoint = self._keep(owed, per_node)
                made += 1

    def next(self, params: ua.BrowseNextParameters) -> list[ua.BrowseResult]:
        """BrowseNext: the next references of each point, or release them."""
        results = []
        for point in params.ContinuationPoints:
            entry = self._owed.pop(bytes(point or b""), None)
            if entry is None:
                results.append(ua.BrowseResult(StatusCode=ua.StatusCode(
                    ua.StatusCodes.BadContinuationPointInvalid)))
                continue
            if params.ReleaseContinuationPoints:
                results.append(ua.BrowseResult())
                continue
            owed, per_node = entry
            result = ua.BrowseResult(References=owed[:per_node])
            if len(owed) > per_node:
                result.ContinuationPoint = self._keep(owed[per_node:], per_node)
            results.append(result)
        return results

    def _keep(self, owed: list[ua.ReferenceDescription], per_node: int) -> bytes:
        while len(self._owed) >= self._most:  # the oldest point goes (Part 4: the server
            self._owed.popitem(last=False)   # may release points it cannot keep)
        point = os.urandom(16)
        self._owed[point] = (owed, per_node)
        return point
