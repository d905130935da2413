"""Compare-and-set on KV: conflicts retry, stale refusals are re-checked, a silent
store fails closed within its timeout."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from schemas.limits import WindowRecord
from services.runtime.errors import RateLimited, ServiceUnavailable
from services.runtime.kvcas import KvCas
from tests.unit.limits.fakes import FakeKv


def cas(kv: FakeKv, timeout_s: float = 1.0) -> KvCas[WindowRecord]:
    fake: Any = kv
    return KvCas(fake, WindowRecord, timeout_s)


def bump(limit: int) -> Any:
    def edit(rec: WindowRecord) -> int:
        if rec.requests >= limit:
            raise RateLimited("full")
        rec.requests += 1
        return rec.requests

    return edit


async def test_changes_apply_on_top_of_another_writer() -> None:
    kv = FakeKv()
    store = cas(kv)
    assert await store.change("k", bump(10)) == 1
    kv.other("k", WindowRecord(requests=5))  # another replica wrote
    assert await store.change("k", bump(10)) == 6  # the conflict was retried on fresh data
    record, _ = await store.read("k")
    assert record.requests == 6


async def test_concurrent_changes_are_written_together_and_each_counts() -> None:
    kv = FakeKv()
    store = cas(kv)
    results = await asyncio.gather(*(store.change("k", bump(100)) for _ in range(30)))
    assert sorted(results) == list(range(1, 31))
    assert kv.updates == 2  # the first alone, the rest in one write behind it


async def test_a_refusal_in_a_batch_does_not_hold_back_the_others() -> None:
    kv = FakeKv()
    store = cas(kv)
    results = await asyncio.gather(
        *(store.change("k", bump(3)) for _ in range(5)), return_exceptions=True
    )
    assert sorted(r for r in results if isinstance(r, int)) == [1, 2, 3]
    assert sum(isinstance(r, RateLimited) for r in results) == 2


async def test_a_deferred_change_rides_along_or_goes_on_its_own() -> None:
    kv = FakeKv()
    store = cas(kv)
    await store.change("k", bump(10))

    def undo(rec: WindowRecord) -> None:
        rec.requests -= 1

    store.later("k", undo, delay_s=60)
    assert await store.change("k", bump(10)) == 1  # undo went first, in the same write
    assert kv.updates == 2
    store.later("k", undo, delay_s=0.01)
    await asyncio.sleep(0.05)  # the deferral itself is the behaviour under test
    await store.flush()
    record, _ = await store.read("k")
    assert record.requests == 0 and kv.updates == 3


async def test_a_refusal_on_a_stale_copy_is_checked_against_the_store() -> None:
    kv = FakeKv()
    store = cas(kv)
    for _ in range(3):
        await store.change("k", bump(3))
    kv.other("k", WindowRecord(requests=0))  # the window was reset elsewhere
    assert await store.change("k", bump(3)) == 1
    kv.other("k", WindowRecord(requests=3))
    with pytest.raises(RateLimited):
        await store.change("k", bump(3))


async def test_a_silent_store_fails_closed_within_the_timeout() -> None:
    kv = FakeKv()
    kv.hang = True
    store = cas(kv, timeout_s=0.05)
    with pytest.raises(ServiceUnavailable):
        await asyncio.wait_for(store.change("k", bump(1)), 1.0)
