"""UsageWriter with a fake store, fake ack handles and a fake clock."""

from __future__ import annotations

import asyncio
import logging

import pytest

from schemas.subjects import attempt_msg_id
from services.accounting.writer import UsageWriter, dedup_token
from tests.unit.accounting.factories import usage_event
from tests.unit.accounting.fakes import FakeClock, FakeHandle, FakeStore


def make_writer(
    store: FakeStore, clock: FakeClock, batch_size: int = 3, interval: float = 0.2
) -> UsageWriter:
    return UsageWriter(
        store, batch_size=batch_size, flush_interval_s=interval, clock=clock, sleep=clock.sleep
    )


def body(i: int) -> bytes:
    return usage_event(i).model_dump_json().encode()


async def test_flushes_when_the_batch_is_full() -> None:
    store, clock = FakeStore(), FakeClock()
    writer = make_writer(store, clock)
    handles = [FakeHandle() for _ in range(4)]
    for i, handle in enumerate(handles[:3]):
        await writer.add(body(i), handle, f"req-{i}:1")
    assert len(store.batches) == 1
    events, token = store.batches[0]
    assert [e.request_id for e in events] == ["req-000000", "req-000001", "req-000002"]
    assert token == dedup_token(["req-2:1", "req-0:1", "req-1:1"])
    assert [h.verdicts for h in handles[:3]] == [["ack"]] * 3

    await writer.add(body(3), handles[3], "req-3:1")
    assert len(store.batches) == 1
    assert handles[3].verdicts == []
    assert writer.pending == 1


async def test_flushes_on_time_not_before() -> None:
    store, clock = FakeStore(), FakeClock()
    writer = make_writer(store, clock)
    handle = FakeHandle()
    await writer.add(body(1), handle)
    clock.now += 0.19
    assert await writer.flush_if_due() == 0
    assert handle.verdicts == []
    clock.now += 0.01
    assert await writer.flush_if_due() == 1
    assert handle.verdicts == ["ack"]
    assert await writer.flush_if_due() == 0  # nothing pending any more


async def test_timer_flushes_a_partial_batch_after_the_interval() -> None:
    store, clock = FakeStore(), FakeClock()
    writer = make_writer(store, clock, batch_size=100, interval=0.25)
    timer = asyncio.create_task(writer.run())
    try:
        await asyncio.sleep(0)  # the timer waits: nothing is pending
        assert clock.slept == []
        start = clock.now
        handle = FakeHandle()
        await writer.add(body(1), handle)
        await asyncio.wait_for(store.inserted.wait(), timeout=5)
        assert clock.now - start == pytest.approx(0.25)
        assert handle.verdicts == ["ack"]
    finally:
        await writer.close()
        await asyncio.wait_for(timer, timeout=5)


async def test_failed_insert_naks_with_delay_and_acks_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store, clock = FakeStore(), FakeClock()
    store.fail_next = 1
    writer = make_writer(store, clock, batch_size=2)
    handles = [FakeHandle(), FakeHandle()]
    with caplog.at_level(logging.WARNING, logger="igw.accounting.writer"):
        for i, handle in enumerate(handles):
            await writer.add(body(i), handle)
    assert store.batches == []
    assert [h.verdicts for h in handles] == [["nak"], ["nak"]]
    assert [h.nak_delays for h in handles] == [[2.0], [2.0]]
    assert "usage insert of 2 events failed" in caplog.text
    assert "ClickHouse is down" in caplog.text

    # Redelivered later: stored and acked with the same token as the first try.
    redelivered = [FakeHandle(), FakeHandle()]
    for i, handle in enumerate(redelivered):
        await writer.add(body(i), handle)
    assert [h.verdicts for h in redelivered] == [["ack"], ["ack"]]
    assert store.batches[0][1] == dedup_token([attempt_msg_id(f"req-{i:06d}", 1) for i in (0, 1)])


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b'{"request_id": "r1"}',
        usage_event(1, prompt_tokens=-1).model_dump_json().encode(),
    ],
)
async def test_malformed_message_is_terminated_and_does_not_block(
    data: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    store, clock = FakeStore(), FakeClock()
    writer = make_writer(store, clock, batch_size=1)
    bad, good = FakeHandle(), FakeHandle()
    with caplog.at_level(logging.WARNING, logger="igw.accounting.writer"):
        await writer.add(data, bad, "bad:1")
        await writer.add(body(2), good, "good:1")
    assert bad.verdicts == ["term"]
    assert good.verdicts == ["ack"]
    assert "terminating malformed usage message bad:1" in caplog.text
    assert len(store.batches) == 1


async def test_close_flushes_what_is_held() -> None:
    store, clock = FakeStore(), FakeClock()
    writer = make_writer(store, clock, batch_size=10)
    handle = FakeHandle()
    await writer.add(body(1), handle)
    assert await writer.close() == 1
    assert handle.verdicts == ["ack"]


def test_token_ignores_order_and_depends_on_every_id() -> None:
    assert dedup_token(["b:1", "a:1"]) == dedup_token(["a:1", "b:1"])
    assert dedup_token(["a:1", "b:1"]) != dedup_token(["a:1", "b:2"])


def test_rejects_nonsense_limits() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        UsageWriter(FakeStore(), batch_size=0, flush_interval_s=1)
