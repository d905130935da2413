"""UsagePuller with a scripted subscription and a fake store."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import nats.errors

from services.accounting.puller import UsagePuller
from services.accounting.writer import UsageWriter
from tests.unit.accounting.factories import usage_event
from tests.unit.accounting.fakes import FakeClock, FakeHandle, FakeStore


@dataclass
class FakeMsg(FakeHandle):
    data: bytes = b""
    headers: dict[str, str] | None = None

    def __post_init__(self) -> None:
        FakeHandle.__init__(self)


@dataclass
class ScriptedSubscription:
    """Returns or raises the scripted outcomes in order, then stops the puller."""

    script: list[Any]
    on_empty: asyncio.Event = field(default_factory=asyncio.Event)
    calls: list[tuple[int, float | None]] = field(default_factory=list)

    async def fetch(self, batch: int = 1, timeout: float | None = 5) -> list[Any]:  # noqa: ASYNC109
        self.calls.append((batch, timeout))
        if not self.script:
            self.on_empty.set()
            raise nats.errors.TimeoutError
        outcome = self.script.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return list(outcome)


def msg(i: int) -> FakeMsg:
    return FakeMsg(
        data=usage_event(i).model_dump_json().encode(), headers={"Nats-Msg-Id": f"req-{i}:1"}
    )


async def test_every_fetched_message_reaches_the_writer_despite_timeouts() -> None:
    store, clock = FakeStore(), FakeClock()
    writer = UsageWriter(store, batch_size=3, flush_interval_s=1, clock=clock, sleep=clock.sleep)
    first, second = [msg(1), msg(2)], [msg(3)]
    subscription = ScriptedSubscription(
        [
            TimeoutError(),  # the bare asyncio one nats-py raises when a fetch runs out of time
            first,
            nats.errors.TimeoutError(),
            ConnectionError("reconnecting"),
            second,
        ]
    )
    puller = UsagePuller(subscription, writer, batch_size=3, fetch_timeout_s=0.2, retry_delay_s=0)
    task = asyncio.create_task(puller.run())
    await asyncio.wait_for(subscription.on_empty.wait(), timeout=5)
    await puller.stop()
    await asyncio.wait_for(task, timeout=5)

    assert [m.verdicts for m in first + second] == [["ack"]] * 3
    events, _ = store.batches[0]
    assert [e.request_id for e in events] == ["req-000001", "req-000002", "req-000003"]
    assert subscription.calls[0] == (3, 0.2)


async def test_a_partial_batch_lingers_instead_of_fetching_again_at_once() -> None:
    store, clock = FakeStore(), FakeClock()
    writer = UsageWriter(store, batch_size=3, flush_interval_s=1, clock=clock, sleep=clock.sleep)
    fetched = asyncio.Event()

    class Once(ScriptedSubscription):
        async def fetch(self, batch: int = 1, timeout: float | None = 5) -> list[Any]:  # noqa: ASYNC109
            result = await super().fetch(batch, timeout)
            fetched.set()
            return result

    subscription = Once([[msg(1)]])
    puller = UsagePuller(
        subscription, writer, batch_size=3, fetch_timeout_s=0.2, retry_delay_s=0, linger_s=30
    )
    task = asyncio.create_task(puller.run())
    await asyncio.wait_for(fetched.wait(), timeout=5)
    for _ in range(20):  # give the loop every chance to fetch again; it must not
        await asyncio.sleep(0)
    assert len(subscription.calls) == 1
    await puller.stop()
    await asyncio.wait_for(task, timeout=5)  # stop cuts the 30 s linger short
