from __future__ import annotations

import time
from dataclasses import dataclass

import pytest

from schemas.bus import ReplyMeta
from schemas.subjects import HEADER_REPLY
from services.ingress.replies import ReplyStream
from services.runtime.errors import DeadlineExceeded, UpstreamProtocolError


@dataclass
class FakeMsg:
    data: bytes
    headers: dict[str, str] | None


def reply(seq: int, kind: str = "chunk", payload: bytes = b"{}") -> FakeMsg:
    meta = ReplyMeta(
        kind=kind,  # type: ignore[arg-type]
        request_id="r",
        attempt=1,
        seq=seq,
        provider="p",
        deployment="d",
    )
    return FakeMsg(payload, {HEADER_REPLY: meta.model_dump_json()})


async def test_events_come_back_in_order_with_their_payloads() -> None:
    stream = ReplyStream("r", time.time() + 5, limit=8)
    stream.put(reply(0, payload=b'{"n":0}'))  # type: ignore[arg-type]
    stream.put(reply(1, kind="terminal", payload=b""))  # type: ignore[arg-type]
    first, second = await stream.next(), await stream.next()
    assert (first.meta.kind, first.meta.seq, first.payload) == ("chunk", 0, b'{"n":0}')
    assert (second.meta.kind, second.payload) == ("terminal", b"")


async def test_deadline_raises_504() -> None:
    stream = ReplyStream("r", time.time() + 0.05, limit=8)
    with pytest.raises(DeadlineExceeded) as info:
        await stream.next()
    assert info.value.status == 504


async def test_overflow_drops_the_stream_instead_of_growing() -> None:
    stream = ReplyStream("r", time.time() + 5, limit=2)
    for seq in range(5):
        stream.put(reply(seq))  # type: ignore[arg-type]
    assert stream.overflowed
    await stream.next()
    await stream.next()
    with pytest.raises(UpstreamProtocolError):
        await stream.next()


@pytest.mark.parametrize("headers", [None, {}, {HEADER_REPLY: "{nope"}])
async def test_a_reply_without_a_valid_header_is_a_protocol_error(
    headers: dict[str, str] | None,
) -> None:
    stream = ReplyStream("r", time.time() + 5, limit=2)
    stream.put(FakeMsg(b"{}", headers))  # type: ignore[arg-type]
    with pytest.raises(UpstreamProtocolError):
        await stream.next()
