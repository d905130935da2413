"""Compare-and-set on NATS KV entries holding pydantic records.

:meth:`KvCas.change` reads a record (or starts from an empty one), lets a pure
function change it, and writes it back only if nobody wrote in between
(``kv.update(key, value, last=revision)``); on a conflict it reads again and
retries. Within one process, changes to one key wait for each other instead of
conflicting. The last revision this process wrote or read is cached per key, so
on a key that only this replica writes a change costs one round trip.

The change function may raise to refuse the change (an exceeded limit): then
nothing is written and the exception reaches the caller.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from pydantic import BaseModel

from services.runtime.errors import ServiceUnavailable

R = TypeVar("R", bound=BaseModel)
T = TypeVar("T")

MAX_CONFLICTS = 64
CACHE_LIMIT = 50_000


class KvCas(Generic[R]):
    def __init__(self, kv: KeyValue, model: type[R], timeout_s: float = 1.0) -> None:
        self.kv = kv
        self.model = model
        self.timeout_s = timeout_s
        self._cache: dict[str, tuple[int, bytes]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

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
        """Apply ``edit`` to the record atomically; returns what ``edit`` returned.

        Raises ``ServiceUnavailable`` when the store does not answer within the
        timeout: callers fail closed rather than admit without a check.
        """
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        try:
            async with asyncio.timeout(self.timeout_s), lock:
                return await self._change(key, edit)
        except TimeoutError:
            raise ServiceUnavailable(
                "the gateway's limit store did not answer in time; retry shortly"
            ) from None

    async def _change(self, key: str, edit: Callable[[R], T]) -> T:
        cached = self._cache.get(key)
        fresh = cached is None
        if cached is not None:
            revision, raw = cached
            record = self.model.model_validate_json(raw) if raw else self.model()
        else:
            record, revision = await self.read(key)
        for _ in range(MAX_CONFLICTS):
            try:
                result = edit(record)
            except Exception:
                if fresh:
                    raise
                # a refusal on a cached copy may be stale: decide on the stored one
                record, revision = await self.read(key)
                fresh = True
                continue
            raw = record.model_dump_json().encode()
            try:
                written = await self.kv.update(key, raw, last=revision)
            except KeyWrongLastSequenceError:
                self._cache.pop(key, None)
                record, revision = await self.read(key)
                fresh = True
                continue
            self._remember(key, written, raw)
            return result
        raise ServiceUnavailable("the gateway's limit store is too contended; retry shortly")

    def _remember(self, key: str, revision: int, raw: bytes) -> None:
        if len(self._cache) >= CACHE_LIMIT:
            self._cache.clear()
            self._locks = {k: v for k, v in self._locks.items() if v.locked()}
        self._cache[key] = (revision, raw)
