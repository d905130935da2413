"""Idempotency-Key: the record key, the body hash, the stored record, and how a
claim is settled (stored when the answer succeeded, forgotten otherwise)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from starlette.responses import Response

from schemas.bus import ErrorInfo, ReplyMeta
from schemas.idempotency import IdempotencyRecord
from services.ingress.auth import OPEN, Principal
from services.ingress.idempotency import (
    MAX_KEY_CHARS,
    REPLAYED,
    SSE,
    Claim,
    IdempotencyStore,
    body_hash,
    check_key,
    identity,
    record_key,
    replay,
)
from services.ingress.sse import DONE, OpenAIRenderer, Renderer
from services.runtime.errors import InvalidRequest
from services.runtime.settings import IdempotencySettings

BODY: dict[str, Any] = {
    "model": "sim",
    "messages": [{"role": "user", "content": "hi", "name": "ann"}],
    "temperature": 0,
}


def test_a_key_is_1_to_255_characters() -> None:
    assert check_key("k" * MAX_KEY_CHARS) == "k" * MAX_KEY_CHARS
    for bad in ("", "   ", "k" * (MAX_KEY_CHARS + 1)):
        with pytest.raises(InvalidRequest) as caught:
            check_key(bad)
        assert caught.value.status == 400 and caught.value.param == "Idempotency-Key"


def test_the_caller_is_part_of_the_record_key() -> None:
    virtual = Principal(role="user", token="ab" * 32)
    assert identity(virtual) == "ab" * 32
    assert identity(Principal(role="admin")) == "master"
    assert identity(OPEN) == "open"
    key = record_key(identity(virtual), "order-17")
    assert key == record_key("ab" * 32, "order-17")
    assert len(key) == 64 and int(key, 16) >= 0 and "order-17" not in key
    assert key != record_key("master", "order-17")
    assert key != record_key(identity(virtual), "order-18")


def test_the_body_hash_ignores_key_order_only() -> None:
    reordered = {"temperature": 0, "messages": [{"name": "ann", "content": "hi", "role": "user"}]}
    reordered["model"] = "sim"
    assert body_hash(BODY) == body_hash(reordered)
    assert body_hash(BODY) != body_hash({**BODY, "temperature": 1})
    assert body_hash(BODY) != body_hash({**BODY, "stream": True})
    assert body_hash(BODY) != body_hash(
        {**BODY, "messages": [*BODY["messages"], BODY["messages"][0]]}
    )


def test_the_record_round_trips_through_json() -> None:
    flying = IdempotencyRecord(state="in_flight", body_hash="h", request_id="req_1", deadline=9.5)
    assert flying.schema_version == 1 and flying.body == b"" and flying.status is None
    answer = b'data: {"x": "\xc3\xa9"}\n\ndata: [DONE]\n\n'
    done = flying.finished(200, SSE, answer, {"x-request-id": "req_1"})
    assert (flying.state, done.state) == ("in_flight", "done")
    raw = done.model_dump_json()
    assert "[DONE]" not in raw  # the answer is base64 in JSON
    back = IdempotencyRecord.model_validate_json(raw)
    assert back == done and back.body == answer
    newer = raw[:-1] + ', "added_later": 1}'
    assert IdempotencyRecord.model_validate_json(newer) == done


def test_a_replay_repeats_the_answer_and_says_so() -> None:
    flying = IdempotencyRecord(state="in_flight", body_hash="h", request_id="req_1", deadline=1)
    kept = {"x-request-id": "req_1", "x-igw-provider": "openai"}
    reply = replay(flying.finished(200, "application/json", b'{"id": "c1"}', kept))
    assert reply.status_code == 200 and reply.body == b'{"id": "c1"}'
    assert reply.headers["x-request-id"] == "req_1" and reply.headers[REPLAYED] == "true"
    assert reply.headers["content-type"] == "application/json"
    stream = replay(flying.finished(200, SSE, DONE, kept))
    assert stream.headers["content-type"].startswith(SSE)


class FakeKV:
    """Records the compare-and-set writes a claim makes."""

    def __init__(self) -> None:
        self.writes: list[tuple[str, str, int | None, bytes | None]] = []
        self.written = asyncio.Event()

    async def update(self, key: str, value: bytes, last: int | None = None) -> int:
        self.writes.append(("update", key, last, value))
        self.written.set()
        return (last or 0) + 1

    async def delete(self, key: str, last: int | None = None) -> bool:
        self.writes.append(("delete", key, last, None))
        self.written.set()
        return True

    async def settled(self) -> tuple[str, IdempotencyRecord | None]:
        await asyncio.wait_for(self.written.wait(), 5)
        [(op, key, last, value)] = self.writes
        assert (key, last) == ("k", 3)
        return op, None if value is None else IdempotencyRecord.model_validate_json(value)


def claim_on(kv: FakeKV, max_bytes: int = 4096) -> Claim:
    settings = IdempotencySettings(max_response_bytes=max_bytes)
    store = IdempotencyStore(kv, settings)  # type: ignore[arg-type]
    record = IdempotencyRecord(state="in_flight", body_hash="h", request_id="req_1", deadline=1)
    return Claim(store, "k", 3, record)


META = ReplyMeta(
    kind="terminal", request_id="req_1", attempt=1, seq=2, provider="p", deployment="d"
)


async def drain(events: AsyncIterator[bytes], stop_after: int | None = None) -> bytes:
    out = b""
    async for data in events:
        out += data
        if stop_after is not None and len(out) >= stop_after:
            break
    if stop_after is not None:
        await events.aclose()  # type: ignore[attr-defined]
    return out


async def relay(render: Renderer, *, fail: bool = False, size: int = 10) -> AsyncIterator[bytes]:
    yield render.chunk(b'{"n": 0, "pad": "' + b"x" * size + b'"}')
    yield render.chunk(b'{"n": 1}')
    if fail:
        yield render.error(ErrorInfo(status=502, type="upstream_error", message="cut"))
    else:
        yield render.done(META)


async def test_a_clean_stream_is_stored_as_the_client_saw_it() -> None:
    kv = FakeKV()
    tap = claim_on(kv).tap({"x-request-id": "req_1", "x-igw-attempts": "1", "x-cache": "MISS"})
    sent = await drain(tap.watch(relay(tap.wrap(OpenAIRenderer()))))
    assert sent.endswith(DONE)
    op, record = await kv.settled()
    assert op == "update" and record is not None
    assert (record.state, record.status, record.media_type) == ("done", 200, SSE)
    assert record.body == sent
    assert record.headers == {"x-request-id": "req_1", "x-igw-attempts": "1"}


async def test_a_stream_that_failed_or_was_left_is_forgotten() -> None:
    failed = FakeKV()
    tap = claim_on(failed).tap({})
    await drain(tap.watch(relay(tap.wrap(OpenAIRenderer()), fail=True)))
    assert (await failed.settled())[0] == "delete"

    left = FakeKV()
    tap = claim_on(left).tap({})
    await drain(tap.watch(relay(tap.wrap(OpenAIRenderer()))), stop_after=1)
    assert (await left.settled())[0] == "delete"


async def test_a_stream_too_large_to_keep_is_forgotten() -> None:
    kv = FakeKV()
    tap = claim_on(kv, max_bytes=1024).tap({})
    sent = await drain(tap.watch(relay(tap.wrap(OpenAIRenderer()), size=2000)))
    assert sent.endswith(DONE)
    assert (await kv.settled())[0] == "delete"


async def test_finish_keeps_a_success_and_forgets_a_failure() -> None:
    kv = FakeKV()
    answer = Response(b'{"id": "c1"}', media_type="application/json", headers={"x-request-id": "r"})
    assert await claim_on(kv).finish(answer) is answer
    op, record = await kv.settled()
    assert op == "update" and record is not None and record.body == b'{"id": "c1"}'
    assert record.headers == {"x-request-id": "r"} and record.media_type == "application/json"

    for status in (400, 429, 500, 504):
        kv = FakeKV()
        await claim_on(kv).finish(Response(b"{}", status_code=status))
        assert (await kv.settled())[0] == "delete"

    kv = FakeKV()
    await claim_on(kv, max_bytes=1024).finish(Response(b"x" * 2048))
    assert (await kv.settled())[0] == "delete"
