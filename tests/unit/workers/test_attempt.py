"""run_attempt against a scripted adapter: what the client receives and what is billed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from decimal import Decimal
from typing import ClassVar

import orjson
import pytest

from schemas.bus import InferenceRequest, ReplyMeta, RouteDecision, WorkItem
from schemas.openai_chat import Usage
from services.runtime.errors import GatewayError, UpstreamProtocolError, UpstreamRateLimited
from services.runtime.settings import ModelDeployment, Price
from services.workers.attempt import Progress, run_attempt, usage_event
from services.workers.protocol import Completion, StreamEvent, UpstreamCall

DEPLOYMENT = ModelDeployment(
    alias="m",
    provider="openai",
    base_url="http://upstream.invalid/v1",
    model="up-1",
    price=Price(input_per_mtok=Decimal(1), output_per_mtok=Decimal(2)),
)
USAGE = Usage(prompt_tokens=10, completion_tokens=3, total_tokens=13)


def chunk(content: str | None = None, finish: str | None = None) -> dict[str, object]:
    delta = {"content": content} if content else {}
    return {"id": "c", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


class Scripted:
    name: ClassVar[str] = "scripted"

    def __init__(
        self,
        events: list[StreamEvent] | None = None,
        fail: GatewayError | None = None,
        hang: asyncio.Event | None = None,
    ) -> None:
        self.events = events or []
        self.fail = fail
        self.hang = hang
        self.calls: list[UpstreamCall] = []
        self.closed = False

    async def complete(self, call: UpstreamCall) -> Completion:
        self.calls.append(call)
        if self.fail:
            raise self.fail
        return Completion({"id": "x", "choices": [{"finish_reason": "stop"}]}, USAGE, "stop")

    async def stream(self, call: UpstreamCall) -> AsyncGenerator[StreamEvent, None]:
        self.calls.append(call)
        try:
            for event in self.events:
                yield event
            if self.hang:
                await self.hang.wait()
            if self.fail:
                raise self.fail
        finally:
            self.closed = True


def item(stream: bool, include_usage: bool = False, deadline_s: float = 30) -> WorkItem:
    now = time.time()
    request = InferenceRequest(
        request_id="req_1",
        created_at=now,
        deadline=now + deadline_s,
        model="m",
        stream=stream,
        include_usage=include_usage,
        reply_subject="igw.chunks.i.req_1",
        body={"model": "m", "messages": [{"role": "user", "content": "hello there"}]},
    )
    route = RouteDecision(
        provider="openai", deployment="m", upstream_model="up-1", subject="igw.work.openai.m"
    )
    return WorkItem(request=request, route=route)


class Sink:
    def __init__(self) -> None:
        self.events: list[ReplyMeta] = []
        self.payloads: list[bytes] = []
        self.got_one = asyncio.Event()

    async def __call__(self, meta: ReplyMeta, payload: bytes) -> None:
        self.events.append(meta)
        self.payloads.append(payload)
        self.got_one.set()

    @property
    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]


async def test_non_stream_sends_one_terminal_and_bills_usage() -> None:
    sink, adapter = Sink(), Scripted()
    usage = await run_attempt(item(False), DEPLOYMENT, adapter, sink, Progress())
    assert sink.kinds == ["terminal"]
    assert sink.events[0].error is None
    assert sink.events[0].finish_reason == "stop"
    assert sink.events[0].usage == USAGE
    assert orjson.loads(sink.payloads[0]) == {"id": "x", "choices": [{"finish_reason": "stop"}]}
    assert adapter.calls[0].body["model"] == "up-1"
    assert "stream" not in adapter.calls[0].body
    assert usage.status == "ok"
    assert (usage.prompt_tokens, usage.completion_tokens) == (10, 3)
    assert usage.cost_usd == Decimal("0.000016")
    assert not usage.usage_estimated


async def test_stream_numbers_chunks_and_hides_usage_unless_asked() -> None:
    events = [
        StreamEvent(chunk("a"), has_output=True),
        StreamEvent(chunk("b"), has_output=True),
        StreamEvent(chunk(finish="stop"), finish_reason="stop"),
        StreamEvent({"id": "c", "choices": [], "usage": USAGE.model_dump()}, usage=USAGE),
    ]
    sink = Sink()
    usage = await run_attempt(item(True), DEPLOYMENT, Scripted(events), sink, Progress())
    assert [e.seq for e in sink.events] == [0, 1, 2, 3]
    assert sink.kinds == ["chunk", "chunk", "chunk", "terminal"]
    assert sink.events[-1].finish_reason == "stop"
    assert sink.events[-1].usage == USAGE
    assert sink.payloads[-1] == b""
    assert all(b"completion_tokens" not in p for p in sink.payloads)
    assert usage.completion_tokens == 3
    assert usage.ttft_ms is not None


async def test_stream_forwards_usage_chunk_when_asked() -> None:
    events = [
        StreamEvent(chunk("a"), has_output=True),
        StreamEvent(chunk(finish="stop"), finish_reason="stop"),
        StreamEvent({"id": "c", "choices": [], "usage": USAGE.model_dump()}, usage=USAGE),
    ]
    sink = Sink()
    await run_attempt(
        item(True, include_usage=True), DEPLOYMENT, Scripted(events), sink, Progress()
    )
    assert sink.kinds == ["chunk", "chunk", "chunk", "terminal"]
    assert orjson.loads(sink.payloads[2])["usage"]["completion_tokens"] == 3


async def test_stream_without_upstream_usage_gets_an_estimated_usage_chunk() -> None:
    events = [
        StreamEvent(chunk("a"), has_output=True),
        StreamEvent(chunk("b"), has_output=True),
        StreamEvent(chunk(finish="stop"), finish_reason="stop"),
    ]
    sink = Sink()
    usage = await run_attempt(
        item(True, include_usage=True), DEPLOYMENT, Scripted(events), sink, Progress()
    )
    assert sink.kinds == ["chunk", "chunk", "chunk", "chunk", "terminal"]
    added = orjson.loads(sink.payloads[3])
    assert added["id"] == "c" and added["choices"] == []
    assert added["usage"]["completion_tokens"] == 2 and added["usage"]["prompt_tokens"] > 0
    assert sink.events[-1].usage is not None and sink.events[-1].usage.completion_tokens == 2
    assert usage.usage_estimated and usage.completion_tokens == 2

    quiet = Sink()  # not asked for: no extra chunk, still accounted as an estimate
    usage = await run_attempt(item(True), DEPLOYMENT, Scripted(events), quiet, Progress())
    assert quiet.kinds == ["chunk", "chunk", "chunk", "terminal"]
    assert usage.usage_estimated and usage.completion_tokens == 2


async def test_upstream_error_becomes_an_error_terminal_and_error_usage() -> None:
    sink = Sink()
    adapter = Scripted(fail=UpstreamRateLimited("slow down", retry_after=3))
    usage = await run_attempt(item(False), DEPLOYMENT, adapter, sink, Progress())
    terminal = sink.events[-1]
    assert terminal.kind == "terminal"
    assert terminal.error is not None
    assert (terminal.error.status, terminal.error.retry_after) == (429, 3)
    assert usage.status == "error"
    assert usage.http_status == 429
    assert usage.cost_usd == 0


async def test_stream_cut_after_output_keeps_sequence_and_estimates_usage() -> None:
    events = [StreamEvent(chunk("a"), has_output=True), StreamEvent(chunk("b"), has_output=True)]
    sink = Sink()
    adapter = Scripted(events, fail=UpstreamProtocolError("cut"))
    usage = await run_attempt(item(True), DEPLOYMENT, adapter, sink, Progress())
    assert [e.seq for e in sink.events] == [0, 1, 2]
    assert sink.kinds == ["chunk", "chunk", "terminal"]
    assert sink.events[-1].error is not None
    assert adapter.closed
    assert usage.status == "error"
    assert usage.usage_estimated
    assert usage.completion_tokens == 2


async def test_deadline_stops_a_stalled_upstream() -> None:
    sink = Sink()
    adapter = Scripted([StreamEvent(chunk("a"), has_output=True)], hang=asyncio.Event())
    usage = await run_attempt(item(True, deadline_s=0.2), DEPLOYMENT, adapter, sink, Progress())
    terminal = sink.events[-1]
    assert terminal.kind == "terminal"
    assert terminal.error is not None
    assert terminal.error.status == 504
    assert adapter.closed
    assert usage.status == "error"


async def test_expired_request_never_calls_upstream() -> None:
    sink, adapter = Sink(), Scripted()
    usage = await run_attempt(item(False, deadline_s=-1), DEPLOYMENT, adapter, sink, Progress())
    assert adapter.calls == []
    assert usage.http_status == 504


async def test_cancellation_leaves_progress_for_accounting() -> None:
    hang = asyncio.Event()
    adapter = Scripted([StreamEvent(chunk("a"), has_output=True)], hang=hang)
    progress, sink = Progress(), Sink()
    work = item(True)
    task = asyncio.create_task(run_attempt(work, DEPLOYMENT, adapter, sink, progress))
    await sink.got_one.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert adapter.closed
    usage = usage_event(work, DEPLOYMENT, progress, "cancelled", None)
    assert usage.status == "cancelled"
    assert usage.completion_tokens == 1
    assert usage.http_status == 499
