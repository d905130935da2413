"""The provider-call span after the GenAI semantic conventions."""

from __future__ import annotations

import time

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from schemas.bus import InferenceRequest, RouteDecision, UsageEvent, WorkItem
from services.runtime import tracing
from services.workers import genai
from services.workers.attempt import Progress

PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def work(stream: bool = False) -> WorkItem:
    now = time.time()
    return WorkItem(
        route=RouteDecision(
            provider="bedrock",
            deployment="claude-east",
            upstream_model="anthropic.claude-3-haiku",
            subject="igw.work.bedrock.claude-east",
            attempt=2,
        ),
        request=InferenceRequest(
            request_id="req_1",
            created_at=now,
            deadline=now + 30,
            model="fast",
            stream=stream,
            reply_subject="igw.chunks.x.req_1",
            body={"messages": [{"role": "user", "content": "secret prompt"}]},
        ),
    )


def usage(**fields: object) -> UsageEvent:
    base: dict[str, object] = {
        "request_id": "req_1",
        "attempt": 2,
        "ts": time.time(),
        "model": "fast",
        "provider": "bedrock",
        "deployment": "claude-east",
        "upstream_model": "anthropic.claude-3-haiku",
        "prompt_tokens": 12,
        "completion_tokens": 7,
        "finish_reason": "stop",
    }
    return UsageEvent.model_validate({**base, **fields})


def test_off_it_is_the_shared_no_op() -> None:
    assert genai.call_span(work(), {"traceparent": PARENT}) is tracing.NOOP


def test_a_successful_call(spans: InMemorySpanExporter) -> None:
    progress = Progress(response_model="anthropic.claude-3-haiku-v1", response_id="msg_9")
    with genai.call_span(work(stream=True), {"traceparent": PARENT}) as span:
        genai.record(span, usage(cached_tokens=4), progress)
    (done,) = spans.get_finished_spans()
    assert done.name == "chat anthropic.claude-3-haiku"
    assert done.kind is SpanKind.CLIENT
    assert done.parent is not None and done.parent.span_id == 0x00F067AA0BA902B7
    assert dict(done.attributes or {}) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "aws.bedrock",
        "gen_ai.request.model": "anthropic.claude-3-haiku",
        "gen_ai.request.stream": True,
        "gen_ai.response.model": "anthropic.claude-3-haiku-v1",
        "gen_ai.response.id": "msg_9",
        "gen_ai.usage.input_tokens": 12,
        "gen_ai.usage.output_tokens": 7,
        "gen_ai.usage.cache_read.input_tokens": 4,
        "gen_ai.response.finish_reasons": ("stop",),
        "igw.request_id": "req_1",
        "igw.attempt": 2,
        "igw.model": "fast",
        "igw.deployment": "claude-east",
        "igw.status": "ok",
    }
    assert done.status.status_code is StatusCode.UNSET
    assert "secret prompt" not in str(done.attributes)


def test_a_failed_call_has_error_type(spans: InMemorySpanExporter) -> None:
    failed = usage(
        status="error",
        error_type="rate_limit_exceeded",
        http_status=429,
        prompt_tokens=0,
        completion_tokens=0,
        finish_reason=None,
    )
    with genai.call_span(work(), None) as span:
        genai.record(span, failed, Progress())
    (done,) = spans.get_finished_spans()
    attributes = done.attributes or {}
    assert attributes["error.type"] == "rate_limit_exceeded"
    assert attributes["gen_ai.usage.output_tokens"] == 0
    assert "gen_ai.response.finish_reasons" not in attributes
    assert "gen_ai.response.model" not in attributes
    assert done.status.status_code is StatusCode.ERROR
    assert done.parent is None  # a work message without trace context: a trace of its own


def test_unknown_providers_keep_their_name(spans: InMemorySpanExporter) -> None:
    item = work()
    item.route.provider = "acme"
    with genai.call_span(item, {}):
        pass
    (done,) = spans.get_finished_spans()
    assert (done.attributes or {})["gen_ai.provider.name"] == "acme"
