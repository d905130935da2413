"""Leased admission: a busy key is admitted without a write per request, and the
key's limits still hold across replicas sharing its record."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from schemas.bus import ReplyMeta, Usage
from schemas.keys import KeyRecord
from schemas.limits import SpendRecord, spend_key
from services.accounting.settler import Charge, apply
from services.runtime import leases
from services.runtime.admission import Admission, Ticket
from services.runtime.errors import BudgetExceeded, RateLimited
from services.runtime.principal import Principal
from tests.unit.limits.fakes import FakeKv
from tests.unit.limits.test_admission import BODY, settings

FAR = 10**10


def key(**fields: Any) -> Principal:
    record = KeyRecord(token="tok", created_at=0, **fields)
    return Principal(role="user", token="tok", record=record)


def replicas(n: int = 2, **limits: Any) -> tuple[list[Admission], FakeKv]:
    spend: Any = FakeKv()
    windows: Any = FakeKv()
    config = settings(**limits)
    return [Admission(config, None, spend, windows, leases=True) for _ in range(n)], spend


async def until_refused(
    gates: list[Admission], caller: Principal, first: int, last: int
) -> tuple[list[tuple[Admission, Ticket]], Exception | None]:
    """Admit requests first..last round-robin until one is refused."""
    out: list[tuple[Admission, Ticket]] = []
    for n in range(first, last):
        gate = gates[n % len(gates)]
        try:
            ticket = await gate.admit(caller, "m", BODY, f"r{n}", deadline=FAR)
        except (RateLimited, BudgetExceeded) as refusal:
            return out, refusal
        assert ticket is not None
        out.append((gate, ticket))
    return out, None


def stored(spend: FakeKv) -> SpendRecord:
    return SpendRecord.model_validate_json(spend.data[spend_key("key", "tok")].value)


def done(usage: int = 0) -> ReplyMeta:
    return ReplyMeta(
        kind="terminal",
        request_id="r",
        attempt=1,
        seq=0,
        provider="p",
        deployment="d",
        usage=Usage(prompt_tokens=usage, completion_tokens=0, total_tokens=usage),
    )


async def test_a_busy_key_is_admitted_from_its_lease_without_writes() -> None:
    (gate,), spend = replicas(1)
    caller = key(rpm_limit=100_000, tpm_limit=10_000_000, max_parallel_requests=1_000)
    first = await gate.admit(caller, "m", BODY, "r0", deadline=FAR)
    assert first is not None and first.lease is None  # the write that leased
    writes = spend.updates
    tickets = [await gate.admit(caller, "m", BODY, f"r{n}", deadline=FAR) for n in range(1, 50)]
    assert spend.updates == writes
    assert all(t is not None and t.lease is not None for t in tickets)
    assert tickets[-1] is not None
    assert tickets[-1].headers["x-ratelimit-limit-requests"] == "100000"
    # what was leased already counts against the key for everyone
    rec = stored(spend)
    (lease,) = rec.leases.values()
    assert rec.requests == 1 + lease.requests and lease.requests >= 49
    assert rec.live_slots(0) == 1 + lease.slots


async def test_two_replicas_never_pass_a_shared_rpm_and_use_all_of_it() -> None:
    gates, spend = replicas(2)
    caller = key(rpm_limit=400)
    admitted = refused = 0
    for n in range(600):
        try:
            await gates[n % 2].admit(caller, "m", BODY, f"r{n}", deadline=FAR)
            admitted += 1
        except RateLimited:
            refused += 1
    assert admitted == 400 and refused == 200
    assert stored(spend).requests == 400
    assert len(stored(spend).leases) == 2  # both leased while there was room


async def test_parallel_slots_come_back_locally_and_hold_across_replicas() -> None:
    gates, spend = replicas(2)
    caller = key(max_parallel_requests=64)
    live, refusal = await until_refused(gates, caller, 0, 100)
    assert isinstance(refusal, RateLimited)
    assert len(live) == 64
    assert any(t.lease is not None for _, t in live)
    assert stored(spend).live_slots(0) <= 64
    for gate, ticket in live[:10]:
        gate.finish(ticket, done())
    await asyncio.gather(*(g.spend.flush() for g in gates))
    # freed slots can be used again (exact or leased), and never more than 64 in flight
    again, refusal = await until_refused(gates, caller, 100, 200)
    assert isinstance(refusal, RateLimited)
    assert 1 <= len(again) <= 10


async def test_budget_leased_settles_back_and_is_never_overrun() -> None:
    # $29 worst case per request (see test_admission); room for 3,448 of them
    gates, spend = replicas(2)
    caller = key(max_budget=100_000.0)
    tickets: list[Ticket] = []
    for n in range(40):
        ticket = await gates[n % 2].admit(caller, "m", BODY, f"r{n}", deadline=FAR)
        assert ticket is not None
        tickets.append(ticket)
    leased = [t for t in tickets if t.lease is not None]
    assert leased and all(t.budget_lease is not None for t in leased)
    await asyncio.gather(*(g.spend.flush() for g in gates))
    rec = stored(spend)
    assert rec.spent + rec.held(0) <= 100_000.0
    held_before = rec.held(0)
    # the settler: each final event adds the real cost and gives the lease its hold back
    charges = [
        Charge(
            seq=n + 1,
            cost=1.0,
            request_id=t.request_id,
            final=True,
            lease=t.budget_lease,
            lease_hold=t.lease.worst if t.lease else 0.0,
        )
        for n, t in enumerate(tickets)
    ]
    apply(rec, charges, now=0)
    assert rec.spent == 40.0
    assert rec.held(0) == pytest.approx(held_before - 29.0 * 40)


async def test_a_small_budget_is_decided_per_request() -> None:
    (gate,), spend = replicas(1)
    caller = key(max_budget=29.0 * 6)  # six worst cases: too little to lease
    for n in range(6):
        ticket = await gate.admit(caller, "m", BODY, f"r{n}", deadline=FAR)
        assert ticket is not None and ticket.lease is None
    more, refusal = await until_refused([gate], caller, 6, 10)
    assert more == [] and isinstance(refusal, BudgetExceeded)
    assert stored(spend).leases == {}


async def test_an_idle_lease_gives_everything_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(leases, "IDLE_S", 0.05)
    (gate,), spend = replicas(1)
    caller = key(rpm_limit=100_000, max_parallel_requests=1_000, max_budget=1_000_000.0)
    ticket = await gate.admit(caller, "m", BODY, "r0", deadline=FAR)
    second = await gate.admit(caller, "m", BODY, "r1", deadline=FAR)
    assert ticket is not None and second is not None and second.lease is not None
    gate.finish(ticket, done())
    gate.finish(second, done())

    def returned() -> bool:
        rec = stored(spend)
        lease = next(iter(rec.leases.values()))
        # r1's hold (its worst case) stays until the settler gives it back
        return rec.requests == 2 and lease.slots == 0 and lease.held() == pytest.approx(29.0)

    async with asyncio.timeout(5):  # the idle timer fires, then the give-back is written
        while not returned():
            spend.written.clear()
            await spend.written.wait()


async def test_a_refused_sibling_check_gives_the_lease_back() -> None:
    gates, _spend = replicas(1, global_rpm=3)
    (gate,) = gates
    caller = key(rpm_limit=100_000)
    for n in range(3):
        await gate.admit(caller, "m", BODY, f"r{n}", deadline=FAR)
    assert gate.leases is not None
    local = gate.leases._by_key["tok"]
    used = local.requests_used
    with pytest.raises(RateLimited):
        await gate.admit(caller, "m", BODY, "r3", deadline=FAR)
    assert local.requests_used == used  # the global limit refused: nothing taken


async def test_tokens_used_beyond_the_lease_are_counted_in_the_record() -> None:
    (gate,), spend = replicas(1)
    caller = key(tpm_limit=1_000_000)
    await gate.admit(caller, "m", BODY, "r0", deadline=FAR)
    ticket = await gate.admit(caller, "m", BODY, "r1", deadline=FAR)
    assert ticket is not None and ticket.lease is not None
    before = stored(spend).tokens
    gate.finish(ticket, done(usage=10_000_000))
    await gate.spend.flush()
    assert stored(spend).tokens > before


async def test_closing_gives_leased_capacity_back() -> None:
    (gate,), spend = replicas(1)
    caller = key(rpm_limit=100_000, max_parallel_requests=1_000)
    ticket = await gate.admit(caller, "m", BODY, "r0", deadline=FAR)
    assert ticket is not None
    assert stored(spend).requests > 1  # a share was leased
    await gate.close()
    rec = stored(spend)
    assert rec.requests == 1  # only r0 counts now
    assert rec.live_slots(0) == 1  # r0's own slot, still in flight
