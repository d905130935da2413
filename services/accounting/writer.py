"""Batching usage events into the store, acking each message only once it is stored.

The writer knows nothing about NATS: it takes raw message bodies with an
``AckHandle`` each (a nats-py ``Msg`` is one) and decides their fate:

* stored: the batch insert returned, then every message is acked;
* insert failed: nothing is acked; every message is nak'ed with a delay so
  JetStream redelivers it later (retry with backoff, no tight loop);
* malformed (not a ``UsageEvent``, or a value that does not fit the table):
  terminated at once and logged, so it never blocks the stream.

``on_stored`` (the accounting metrics) sees every batch the store accepted.

A batch is flushed when it holds ``batch_size`` events or when its oldest
event has waited ``flush_interval_s``. The insert carries a dedup token made
from the batch's sorted message ids, so re-inserting the same batch is a no-op
in the store.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, Protocol

from pydantic import ValidationError

from schemas.bus import UsageEvent
from schemas.subjects import attempt_msg_id
from services.accounting.rows import InvalidUsage, check
from services.accounting.store import UsageStore

log = logging.getLogger("igw.accounting.writer")

DEFAULT_NAK_DELAY_S: Final = 2.0


class AckHandle(Protocol):
    """How the fate of one message is reported back to the bus."""

    async def ack(self) -> None: ...

    async def nak(self, delay: float | None = None) -> None: ...

    async def term(self) -> None: ...


@dataclass(frozen=True, slots=True)
class _Pending:
    event: UsageEvent
    msg_id: str
    handle: AckHandle


def dedup_token(msg_ids: list[str]) -> str:
    """The same for any batch holding the same message ids, in any order."""
    digest = hashlib.sha256("\n".join(sorted(msg_ids)).encode()).hexdigest()
    return f"usage-{digest}"


class UsageWriter:
    """Collects ``(event, ack handle)`` pairs and flushes them to a ``UsageStore``.

    ``add`` may flush (when the batch is full) and then waits for it, which is
    the backpressure on the consumer. ``run`` is the timer that flushes a
    partial batch once it is old enough; ``close`` stops it and flushes the
    rest. ``clock`` and ``sleep`` are injectable for tests.
    """

    def __init__(
        self,
        store: UsageStore,
        *,
        batch_size: int,
        flush_interval_s: float,
        nak_delay_s: float = DEFAULT_NAK_DELAY_S,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_stored: Callable[[list[UsageEvent]], None] | None = None,
    ) -> None:
        if batch_size < 1 or flush_interval_s <= 0:
            raise ValueError("batch_size must be >= 1 and flush_interval_s > 0")
        self._store = store
        self._batch_size = batch_size
        self._interval = flush_interval_s
        self._nak_delay = nak_delay_s
        self._clock = clock
        self._sleep = sleep
        self._on_stored = on_stored
        self._pending: list[_Pending] = []
        self._oldest_at: float | None = None
        self._flush_lock = asyncio.Lock()
        self._wakeup = asyncio.Event()
        self._closed = False

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def add(self, data: bytes, handle: AckHandle, msg_id: str | None = None) -> None:
        """Take one raw message; terminate it if malformed, flush if the batch is full."""
        try:
            event = UsageEvent.model_validate_json(data)
            check(event)
        except (ValidationError, InvalidUsage) as exc:
            await self._terminate(handle, msg_id, exc)
            return
        msg_id = msg_id or attempt_msg_id(event.request_id, event.attempt)
        self._pending.append(_Pending(event, msg_id, handle))
        if self._oldest_at is None:
            self._oldest_at = self._clock()
            self._wakeup.set()
        if len(self._pending) >= self._batch_size:
            await self.flush()

    def seconds_until_due(self) -> float | None:
        """``None`` when nothing is pending, else how long until the time-based flush."""
        if self._oldest_at is None:
            return None
        return self._oldest_at + self._interval - self._clock()

    async def flush_if_due(self) -> int:
        due = self.seconds_until_due()
        if due is None or (due > 0 and len(self._pending) < self._batch_size):
            return 0
        return await self.flush()

    async def flush(self) -> int:
        """Store what is pending, then ack it; return how many events were stored."""
        async with self._flush_lock:
            batch, self._pending, self._oldest_at = self._pending, [], None
            if not batch:
                return 0
            token = dedup_token([p.msg_id for p in batch])
            try:
                await self._store.insert_usage([p.event for p in batch], token)
            except Exception as exc:
                log.warning(
                    "usage insert of %d events failed, redelivery in %.1f s: %s",
                    len(batch),
                    self._nak_delay,
                    exc,
                )
                await self._settle(batch, "nak")
                return 0
            await self._settle(batch, "ack")
            if self._on_stored is not None:
                self._on_stored([p.event for p in batch])
            return len(batch)

    async def run(self) -> None:
        """Flush partial batches on time until ``close``."""
        while not self._closed:
            due = self.seconds_until_due()
            if due is None:
                self._wakeup.clear()
                await self._wakeup.wait()
            elif due > 0:
                await self._sleep(due)
            else:
                await self.flush()

    async def close(self) -> int:
        """Stop ``run`` and flush what is left; return how many events were stored."""
        self._closed = True
        self._wakeup.set()
        return await self.flush()

    async def _settle(self, batch: list[_Pending], verdict: str) -> None:
        failed = 0
        for pending in batch:
            try:
                if verdict == "ack":
                    await pending.handle.ack()
                else:
                    await pending.handle.nak(delay=self._nak_delay)
            except Exception:
                failed += 1
        if failed:
            log.warning(
                "%d of %d %ss could not be sent; those messages will be redelivered",
                failed,
                len(batch),
                verdict,
            )

    async def _terminate(self, handle: AckHandle, msg_id: str | None, exc: Exception) -> None:
        reason = " ".join(str(exc).split())[:500]
        log.warning("terminating malformed usage message %s: %s", msg_id or "(no id)", reason)
        try:
            await handle.term()
        except Exception as term_exc:
            log.warning("could not terminate message %s: %s", msg_id or "(no id)", term_exc)
