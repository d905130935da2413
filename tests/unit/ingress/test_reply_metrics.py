"""What a reply stream keeps for the ingress metrics, and that the mux's observer
sees every stream exactly once when it is closed."""

from __future__ import annotations

import time
from typing import Any

import pytest

from services.ingress.replies import ReplyMux, ReplyStream
from services.runtime.errors import DeadlineExceeded
from tests.unit.ingress.test_replies import reply


async def test_a_stream_keeps_its_provider_and_first_chunk_time() -> None:
    stream = ReplyStream("r", time.time() + 5, limit=8, model="sim", operation="chat")
    before = time.monotonic()
    stream.put(reply(0))  # type: ignore[arg-type]
    stream.put(reply(1, kind="terminal", payload=b""))  # type: ignore[arg-type]
    await stream.next()
    first = stream.first_chunk_at
    await stream.next()
    assert first is not None and stream.opened <= before <= first
    assert stream.first_chunk_at == first
    assert (stream.provider, stream.model, stream.failure) == ("p", "sim", None)
    assert stream.terminal is not None


async def test_a_non_streaming_answer_has_no_first_chunk() -> None:
    stream = ReplyStream("r", time.time() + 5, limit=8)
    stream.put(reply(0, kind="terminal"))  # type: ignore[arg-type]
    await stream.next()
    assert stream.first_chunk_at is None


async def test_the_error_that_ends_a_stream_is_kept() -> None:
    stream = ReplyStream("r", time.time() + 0.02, limit=8)
    with pytest.raises(DeadlineExceeded):
        await stream.next()
    assert stream.failure == 504


def test_the_observer_sees_each_stream_once_after_its_close_hook() -> None:
    seen: list[Any] = []
    mux = ReplyMux(None, "ingress", 8, observer=lambda stream: seen.append(("observer", stream)))  # type: ignore[arg-type]
    stream = mux.open("r", time.time() + 5, lambda meta: seen.append(("hook", meta)), model="m")
    mux.close("r")
    mux.close("r")
    assert seen == [("hook", None), ("observer", stream)]
    assert mux.in_flight == 0
