"""In-memory stand-ins for the writer's collaborators."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from schemas.bus import SqlResult, UsageEvent


class FakeHandle:
    """Records the fate of one message."""

    def __init__(self) -> None:
        self.verdicts: list[str] = []
        self.nak_delays: list[float | None] = []

    async def ack(self) -> None:
        self.verdicts.append("ack")

    async def nak(self, delay: float | None = None) -> None:
        self.verdicts.append("nak")
        self.nak_delays.append(delay)

    async def term(self) -> None:
        self.verdicts.append("term")


class FakeStore:
    """Keeps inserted batches; ``fail_next`` makes inserts raise."""

    def __init__(self) -> None:
        self.batches: list[tuple[list[UsageEvent], str]] = []
        self.fail_next = 0
        self.inserted = asyncio.Event()
        self.queries: list[tuple[str, int, float]] = []
        self.query_error: Exception | None = None

    async def migrate(self) -> list[int]:
        return []

    async def insert_usage(self, events: Sequence[UsageEvent], dedup_token: str) -> None:
        if self.fail_next:
            self.fail_next -= 1
            raise ConnectionError("ClickHouse is down")
        self.batches.append((list(events), dedup_token))
        self.inserted.set()

    async def query(self, sql: str, max_rows: int, timeout_s: float) -> SqlResult:
        self.queries.append((sql, max_rows, timeout_s))
        if self.query_error is not None:
            raise self.query_error
        return SqlResult(columns=["x"], types=["UInt8"], rows=[[1]])

    async def close(self) -> None:
        return None


class FakeClock:
    """Time that only moves when a test (or ``sleep``) moves it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)
