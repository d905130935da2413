from __future__ import annotations

import time

import pytest

from schemas.bus import Terminal, TokenChunk
from services.ingress.replies import ReplyStream
from services.runtime.errors import DeadlineExceeded, UpstreamProtocolError


def chunk(seq: int) -> bytes:
    return (
        TokenChunk(
            request_id="r", attempt=1, seq=seq, provider="p", deployment="d", data={"n": seq}
        )
        .model_dump_json()
        .encode()
    )


async def test_events_come_back_in_order_and_typed() -> None:
    stream = ReplyStream("r", time.time() + 5, limit=8)
    stream.put(chunk(0))
    stream.put(
        Terminal(request_id="r", attempt=1, seq=1, provider="p", deployment="d")
        .model_dump_json()
        .encode()
    )
    first, second = await stream.next(), await stream.next()
    assert isinstance(first, TokenChunk)
    assert first.data == {"n": 0}
    assert isinstance(second, Terminal)


async def test_deadline_raises_504() -> None:
    stream = ReplyStream("r", time.time() + 0.05, limit=8)
    with pytest.raises(DeadlineExceeded) as info:
        await stream.next()
    assert info.value.status == 504


async def test_overflow_drops_the_stream_instead_of_growing() -> None:
    stream = ReplyStream("r", time.time() + 5, limit=2)
    for seq in range(5):
        stream.put(chunk(seq))
    assert stream.overflowed
    await stream.next()
    await stream.next()
    with pytest.raises(UpstreamProtocolError):
        await stream.next()


async def test_malformed_event_is_a_protocol_error() -> None:
    stream = ReplyStream("r", time.time() + 5, limit=2)
    stream.put(b"{nope")
    with pytest.raises(UpstreamProtocolError):
        await stream.next()
