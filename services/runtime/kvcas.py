"""Compare-and-set on NATS KV entries holding pydantic records, with group commit.

:meth:`KvCas.change` queues an edit (a function that changes the record in
place, or raises to refuse) and waits until it is written. Edits queued for
the same key while a write is in flight are applied together in the next
write, so a busy key costs one round trip per batch rather than per edit.
:meth:`KvCas.later` queues an edit nobody waits for (giving back a slot,
correcting a token count): it rides along with the next write to that key,
or goes on its own after ``delay_s``.

Every write is ``kv.update(key, value, last=revision)``; when another process
wrote in between, the record is read again and the whole batch re-applied. The
last revision this process wrote or read is cached per key, so on a key that
only this replica writes a batch costs one round trip. An edit refused on the
cached copy is decided again on a fresh read (the copy may be stale).

Contract for edits: an edit that raises leaves the record as it was, apart
from harmless normalisation (dropping lapsed entries, rolling a period).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from pydantic import BaseModel

from services.runtime.errors import ServiceUnavailable

log = logging.getLogger("igw.kvcas")

R = TypeVar("R", bound=BaseModel)
T = TypeVar("T")

MAX_CONFLICTS = 64
CACHE_LIMIT = 50_000
RETRY_DEFERRED_S = 0.5


@dataclass(slots=True)
class _Edit:
    apply: Callable[[Any], Any]
    waiter: asyncio.Future[Any] | None


class KvCas(Generic[R]):
    def __init__(self, kv: KeyValue, model: type[R], timeout_s: float = 1.0) -> None:
        self.kv = kv
        self.model = model
        self.timeout_s = timeout_s
        self._cache: dict[str, tuple[int, bytes]] = {}
        self._pending: dict[str, list[_Edit]] = {}
        self._draining: set[str] = set()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def read(self, key: str) -> tuple[R, int]:
        """The record and its revision (0 and an empty record when there is none)."""
        try:
            entry = await self.kv.get(key)
        except KeyNotFoundError:
            return self.model(), 0
        value = entry.value or b""
        record = self.model.model_validate_json(value) if value else self.model()
        assert entry.revision is not None
        self._remember(key, entry.revision, value)
        return record, entry.revision

    async def change(self, key: str, edit: Callable[[R], T]) -> T:
        """Apply ``edit`` atomically; returns what it returned, or raises its refusal.

        Raises ``ServiceUnavailable`` when the store does not answer within the
        timeout: callers fail closed rather than admit without a check. An edit
        that timed out before it was written is dropped.
        """
        if key not in self._draining:
            return await self._change_now(key, edit)
        waiter: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.setdefault(key, []).append(_Edit(edit, waiter))
        self._drain_soon(key, 0.0)
        try:
            return await asyncio.wait_for(asyncio.shield(waiter), self.timeout_s)
        except TimeoutError:
            waiter.cancel()
            raise _late() from None

    async def _change_now(self, key: str, edit: Callable[[R], T]) -> T:
        """No write to ``key`` is in flight: write in the caller's task (no hand-off),
        taking deferred edits along; edits that arrive meanwhile queue up and are
        written after it."""
        self._draining.add(key)
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        batch = [*self._pending.pop(key, ()), _Edit(edit, None)]
        failed = True
        try:
            async with asyncio.timeout(self.timeout_s):
                outcomes = await self._commit(key, batch)
            failed = False
        except TimeoutError:
            raise _late() from None
        except ServiceUnavailable:
            raise
        except Exception as exc:  # the store failed
            raise _unavailable(exc) from None
        finally:
            self._draining.discard(key)
            if failed and len(batch) > 1:  # the deferred edits wait for the next try
                self._pending.setdefault(key, [])[:0] = batch[:-1]
                self._drain_soon(key, RETRY_DEFERRED_S)
            elif self._pending.get(key):
                self._drain_soon(key, 0.0)
        self._settle(key, batch[:-1], outcomes[:-1])
        ok, value = outcomes[-1]
        if not ok:
            raise value
        return value  # type: ignore[no-any-return]

    def later(self, key: str, edit: Callable[[R], object], delay_s: float = 0.05) -> None:
        """Queue ``edit`` without waiting: written with the next change to ``key``,
        or within ``delay_s``. A refusal or a failure is logged."""
        self._pending.setdefault(key, []).append(_Edit(edit, None))
        self._drain_soon(key, delay_s)

    async def flush(self) -> None:
        """Write everything queued now (on shutdown)."""
        for key in list(self._pending):
            self._drain_soon(key, 0.0)
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _drain_soon(self, key: str, delay_s: float) -> None:
        if key in self._draining:
            return  # the running drain takes it along
        loop = asyncio.get_running_loop()
        timer = self._timers.get(key)
        if delay_s > 0:
            if timer is None:
                self._timers[key] = loop.call_later(delay_s, self._drain_soon, key, 0.0)
            return
        if timer is not None:
            timer.cancel()
            del self._timers[key]
        self._draining.add(key)
        task = loop.create_task(self._drain(key))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drain(self, key: str) -> None:
        try:
            while True:
                batch = [
                    e for e in self._pending.pop(key, ()) if e.waiter is None or not e.waiter.done()
                ]
                if not batch:
                    return
                await self._write(key, batch)
        finally:
            self._draining.discard(key)

    async def _write(self, key: str, batch: list[_Edit]) -> None:
        try:
            outcomes = await self._commit(key, batch)
        except Exception as exc:  # the store failed: every edit of the batch fails with it
            failure = exc if isinstance(exc, ServiceUnavailable) else _unavailable(exc)
            outcomes = [(False, failure)] * len(batch)
        self._settle(key, batch, outcomes)

    def _settle(self, key: str, batch: list[_Edit], outcomes: list[tuple[bool, Any]]) -> None:
        """Tell each edit's waiter how it went (log a deferred edit's failure)."""
        for edit, (ok, value) in zip(batch, outcomes, strict=True):
            if edit.waiter is None:
                if not ok:
                    log.warning("a deferred change to %s failed: %s", key, value)
            elif not edit.waiter.done():
                if ok:
                    edit.waiter.set_result(value)
                else:
                    edit.waiter.set_exception(value)

    async def _commit(self, key: str, batch: list[_Edit]) -> list[tuple[bool, Any]]:
        cached = self._cache.get(key)
        fresh = cached is None
        if cached is not None:
            revision, raw = cached
            record = self.model.model_validate_json(raw) if raw else self.model()
        else:
            record, revision = await self.read(key)
        for _ in range(MAX_CONFLICTS):
            outcomes: list[tuple[bool, Any]] = []
            for edit in batch:
                try:
                    outcomes.append((True, edit.apply(record)))
                except Exception as refusal:
                    outcomes.append((False, refusal))
            if not fresh and not all(ok for ok, _ in outcomes):
                record, revision = await self.read(key)  # decide refusals on the stored copy
                fresh = True
                continue
            if not any(ok for ok, _ in outcomes):
                return outcomes  # all refused: nothing to write
            raw = record.model_dump_json().encode()
            try:
                written = await self.kv.update(key, raw, last=revision)
            except KeyWrongLastSequenceError:
                self._cache.pop(key, None)
                record, revision = await self.read(key)
                fresh = True
                continue
            self._remember(key, written, raw)
            return outcomes
        raise ServiceUnavailable("the gateway's limit store is too contended; retry shortly")

    def _remember(self, key: str, revision: int, raw: bytes) -> None:
        if len(self._cache) >= CACHE_LIMIT:
            self._cache.clear()
        self._cache[key] = (revision, raw)


def _late() -> ServiceUnavailable:
    return ServiceUnavailable("the gateway's limit store did not answer in time; retry shortly")


def _unavailable(exc: Exception) -> ServiceUnavailable:
    log.warning("the limit store failed: %s", exc)
    return ServiceUnavailable("the gateway's limit store is unavailable; retry shortly")
