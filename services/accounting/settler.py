"""The spend settler: usage events into the spend records that budgets read.

It reads ``IGW_USAGE`` in stream order with an ordered consumer, starting after
the cursor it saved (``settler.cursor`` in ``igw_spend``). For every key, user
and team an event names, it adds the event's cost to that holder's
``SpendRecord`` and, when the event ends its request, drops the request's
budget hold in the same compare-and-set write. A request admitted from a
key's lease (:mod:`services.runtime.leases`) had its hold taken from the
lease; its final event gives that amount back to the lease instead.

Exactly once: each record remembers the last stream sequence applied to it
(``applied_seq``). Because events are applied in stream order, an event at or
below that sequence is already counted and is skipped. So a crash between
writing records and saving the cursor, a replay from an older cursor, or two
settlers running at once (accounting replicas) never counts an event twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Final

import orjson
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from schemas.limits import CURSOR_KEY, SpendRecord, spend_key
from schemas.subjects import STREAM_USAGE, USAGE_WILDCARD
from services.runtime.kvcas import KvCas

log = logging.getLogger("igw.accounting.settler")

BATCH: Final = 500
LINGER_S: Final = 0.02
IDLE_S: Final = 1.0


@dataclass(frozen=True, slots=True)
class Charge:
    seq: int
    cost: float
    request_id: str
    final: bool
    lease: str | None = None
    lease_hold: float = 0.0


def charges_of(seq: int, data: bytes) -> list[tuple[str, Charge]]:
    """The spend keys one usage event charges, each with its charge."""
    try:
        event: dict[str, Any] = orjson.loads(data)
    except orjson.JSONDecodeError:
        return []
    charge = Charge(
        seq=seq,
        cost=float(event.get("cost_usd") or 0),
        request_id=str(event.get("request_id", "")),
        final=bool(event.get("final", True)),
        lease=event.get("budget_lease") or None,
        lease_hold=float(event.get("budget_lease_hold") or 0),
    )
    out: list[tuple[str, Charge]] = []
    for holder, field in (("key", "key_id"), ("user", "user_id"), ("team", "tenant")):
        ident = event.get(field)
        if isinstance(ident, str) and ident:
            out.append((spend_key(holder, ident), charge))  # type: ignore[arg-type]
    return out


def apply(record: SpendRecord, charges: list[Charge], now: float) -> None:
    """Add the charges not yet applied to ``record`` (a pure edit, for compare-and-set)."""
    record.roll(now)
    record.prune(now)
    for charge in sorted(charges, key=lambda c: c.seq):
        if charge.seq <= record.applied_seq:
            continue
        record.spent += charge.cost
        if charge.final:
            record.holds.pop(charge.request_id, None)
            lease = record.leases.get(charge.lease) if charge.lease else None
            if lease is not None:  # the request took its hold from a lease: give it back
                lease.released += charge.lease_hold
        record.applied_seq = charge.seq


class Settler:
    def __init__(self, js: JetStreamContext, spend: KeyValue) -> None:
        self.js = js
        self.kv = spend
        self.records = KvCas(spend, SpendRecord, timeout_s=10.0)
        self._stopping = asyncio.Event()
        self.cursor = 0

    async def run(self) -> None:
        self.cursor = await self._load_cursor()
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=self.cursor + 1
        )
        sub = await self.js.subscribe(
            USAGE_WILDCARD, stream=STREAM_USAGE, ordered_consumer=True, config=config
        )
        log.info("settling spend from usage sequence %d", self.cursor + 1)
        try:
            while not self._stopping.is_set():
                batch = await self._collect(sub)
                if batch:
                    await self._settle(batch)
        finally:
            with contextlib.suppress(Exception):  # the connection may be closing already
                await sub.unsubscribe()

    async def stop(self) -> None:
        self._stopping.set()

    async def _collect(self, sub: Any) -> list[tuple[int, bytes]]:
        out: list[tuple[int, bytes]] = []
        timeout = IDLE_S
        while len(out) < BATCH:
            try:
                msg = await sub.next_msg(timeout=timeout)
            except TimeoutError:
                break
            out.append((msg.metadata.sequence.stream, msg.data))
            timeout = LINGER_S
        return out

    async def _settle(self, batch: list[tuple[int, bytes]]) -> None:
        per_key: dict[str, list[Charge]] = defaultdict(list)
        for seq, data in batch:
            for key, charge in charges_of(seq, data):
                per_key[key].append(charge)
        now = time.time()
        while True:
            results = await asyncio.gather(
                *(self.records.change(k, _edit(c, now)) for k, c in per_key.items()),
                return_exceptions=True,
            )
            failed = [r for r in results if isinstance(r, BaseException)]
            if not failed:
                break
            # Retrying the whole batch is safe: applied records skip what they hold.
            log.warning("settling spend failed (%s); retrying", failed[0])
            if self._stopping.is_set():
                return  # the next start replays this batch from the saved cursor
            await asyncio.sleep(0.5)
        self.cursor = batch[-1][0]
        await self.kv.put(CURSOR_KEY, str(self.cursor).encode())

    async def _load_cursor(self) -> int:
        try:
            entry = await self.kv.get(CURSOR_KEY)
        except KeyNotFoundError:
            return 0
        try:
            return int(entry.value or b"0")
        except ValueError:
            return 0


def _edit(charges: list[Charge], now: float) -> Any:
    def edit(record: SpendRecord) -> None:
        apply(record, charges, now)

    return edit
