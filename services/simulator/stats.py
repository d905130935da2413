"""Counters of one simulator instance, observable by tests.

Every ``POST /v1/chat/completions`` increments ``requests`` and ``active``, and ends in
exactly one of:

* ``completed``: the simulator played its script to the end (any status, injected faults
  such as ``cut``/``malformed``/``reset`` and HTTP errors included);
* ``disconnects``: the client closed the connection before the simulator finished.

So ``requests == completed + disconnects + active`` at all times (until a reset).
``faults`` counts injected faults per kind, when the fault is actually injected.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Final

COUNTERS: Final[tuple[str, ...]] = ("requests", "active", "completed", "disconnects", "faults")


class Stats:
    """Mutable counters owned by one simulator app instance."""

    __slots__ = (
        "_raw_headers",
        "_waiters",
        "active",
        "completed",
        "disconnects",
        "faults",
        "last_request",
        "requests",
    )

    def __init__(self) -> None:
        self.requests = 0
        self.active = 0
        self.completed = 0
        self.disconnects = 0
        self.faults: dict[str, int] = {}
        self.last_request: Any = None
        self._raw_headers: list[tuple[bytes, bytes]] = []
        self._waiters: list[tuple[Callable[[Stats], bool], asyncio.Future[None]]] = []

    # -- updates (hot path: plain attribute arithmetic, waiters checked only if present) --

    def begin(self) -> None:
        self.requests += 1
        self.active += 1
        if self._waiters:
            self._notify()

    def end(self, *, disconnected: bool) -> None:
        self.active -= 1
        if disconnected:
            self.disconnects += 1
        else:
            self.completed += 1
        if self._waiters:
            self._notify()

    def fault(self, kind: str) -> None:
        self.faults[kind] = self.faults.get(kind, 0) + 1
        if self._waiters:
            self._notify()

    def reset(self) -> None:
        """Zero the counters. ``active`` is live state and is kept."""
        self.requests = self.active
        self.completed = 0
        self.disconnects = 0
        self.faults = {}
        self.last_request = None
        self._raw_headers = []
        if self._waiters:
            self._notify()

    def record_headers(self, raw: list[tuple[bytes, bytes]]) -> None:
        """Keep the (ASGI) headers of the last chat request; decoded only when read."""
        self._raw_headers = raw

    # -- reading --

    @property
    def last_headers(self) -> dict[str, str]:
        """Lower-cased header dict of the last chat request."""
        return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in self._raw_headers}

    def get(self, counter: str) -> int:
        """Value of ``counter``: one of :data:`COUNTERS` (``faults`` is the total over kinds)
        or ``faults.<kind>`` (e.g. ``faults.429``). Raises ``KeyError`` otherwise."""
        if counter == "requests":
            return self.requests
        if counter == "active":
            return self.active
        if counter == "completed":
            return self.completed
        if counter == "disconnects":
            return self.disconnects
        if counter == "faults":
            return sum(self.faults.values())
        if counter.startswith("faults."):
            return self.faults.get(counter[7:], 0)
        raise KeyError(counter)

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "active": self.active,
            "completed": self.completed,
            "disconnects": self.disconnects,
            "faults": dict(self.faults),
            "last_request": self.last_request,
            "last_headers": self.last_headers,
        }

    # -- waiting --

    async def wait_for(self, counter: str, value: int, within_s: float | None = None) -> bool:
        """Wait until ``get(counter) >= value``; False if ``within_s`` seconds pass first.

        Raises ``KeyError`` for an unknown counter (before waiting)."""
        self.get(counter)
        return await self.wait_until(lambda stats: stats.get(counter) >= value, within_s)

    async def wait_until(
        self, predicate: Callable[[Stats], bool], within_s: float | None = None
    ) -> bool:
        """Wait until ``predicate(self)`` holds (re-checked on every counter change);
        False if ``within_s`` seconds pass first."""
        if predicate(self):
            return True
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiter = (predicate, future)
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(future), within_s)
        except TimeoutError:
            return False
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
        return True

    def _notify(self) -> None:
        remaining: list[tuple[Callable[[Stats], bool], asyncio.Future[None]]] = []
        for waiter in self._waiters:
            predicate, future = waiter
            if future.done():
                continue
            if predicate(self):
                future.set_result(None)
            else:
                remaining.append(waiter)
        self._waiters = remaining
