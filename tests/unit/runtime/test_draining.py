"""MessageHandlers: what a router or worker does with its messages on SIGTERM."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from services.runtime.draining import MessageHandlers


@dataclass
class FakeMsg:
    acked: bool = False
    naks: int = 0

    async def ack(self) -> None:
        self.acked = True

    async def nak(self) -> None:
        if self.acked:
            raise RuntimeError("already acknowledged")  # as nats-py's MsgAlreadyAckdError
        self.naks += 1


@dataclass
class FakeSubscription:
    drained: bool = False
    on_drain: list[FakeMsg] = field(default_factory=list)

    async def drain(self) -> None:
        self.drained = True


async def test_handlers_that_finish_in_time_keep_their_messages() -> None:
    handlers, msg, release = MessageHandlers(), FakeMsg(), asyncio.Event()

    async def handle() -> None:
        await release.wait()
        await msg.ack()

    await handlers.dispatch(msg, handle())  # type: ignore[arg-type]
    sub = FakeSubscription()
    draining = asyncio.create_task(handlers.drain(sub, grace_s=5, what="attempts"))
    await asyncio.sleep(0.01)
    assert sub.drained and handlers.stopping and not draining.done()
    release.set()
    await draining
    assert msg.acked and msg.naks == 0 and len(handlers) == 0


async def test_messages_arriving_while_stopping_are_handed_back_at_once() -> None:
    handlers, msg, ran = MessageHandlers(), FakeMsg(), []

    async def handle() -> None:
        ran.append(True)

    await handlers.drain(None, grace_s=1, what="attempts")
    await handlers.dispatch(msg, handle())  # type: ignore[arg-type]
    assert msg.naks == 1 and not ran


async def test_late_handlers_are_cancelled_and_their_messages_naked() -> None:
    handlers, late, settled = MessageHandlers(), FakeMsg(), FakeMsg()

    async def forever() -> None:
        await asyncio.Event().wait()

    async def settles_itself() -> None:  # answers the client, acks, and returns
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await settled.ack()

    await handlers.dispatch(late, forever())  # type: ignore[arg-type]
    await handlers.dispatch(settled, settles_itself())  # type: ignore[arg-type]
    await handlers.drain(None, grace_s=0.05, what="attempts")
    assert late.naks == 1
    assert settled.acked and settled.naks == 0
    assert len(handlers) == 0
