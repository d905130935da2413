"""Trace context into and out of NATS headers, and tracing that costs nothing when off."""

from __future__ import annotations

import re

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import INVALID_SPAN, SpanKind

from services.runtime import tracing

TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-0[13]$")  # sampled (and random)
REMOTE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_off_by_default_adds_no_headers_and_records_nothing() -> None:
    assert not tracing.ENABLED
    headers = {"Nats-Msg-Id": "req_1"}
    assert tracing.inject(headers) == {"Nats-Msg-Id": "req_1"}
    with tracing.span("x", parent={"traceparent": REMOTE}) as span:
        assert span is INVALID_SPAN
        assert not span.is_recording()
        assert tracing.inject({}) == {}
    assert tracing.span("y") is tracing.NOOP
    assert tracing.start_span("z") is INVALID_SPAN
    assert tracing.current_ids() is None


@pytest.mark.parametrize(
    ("environ", "wanted"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "  "}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"}, False),
    ],
)
def test_wanted_only_with_an_endpoint(environ: dict[str, str], wanted: bool) -> None:
    assert tracing.wanted(environ) is wanted


def test_setup_without_an_endpoint_stays_off() -> None:
    assert tracing.setup("igw-test", environ={}) is False
    assert not tracing.ENABLED


def test_inject_writes_the_current_span_as_traceparent(spans: InMemorySpanExporter) -> None:
    with tracing.span("publish") as span:
        headers = tracing.inject({"Nats-Msg-Id": "req_1"})
        ids = tracing.current_ids()
    match = TRACEPARENT.match(headers["traceparent"])
    assert match is not None
    context = span.get_span_context()
    assert match.groups() == (f"{context.trace_id:032x}", f"{context.span_id:016x}")
    assert ids == match.groups()
    assert headers["Nats-Msg-Id"] == "req_1"


def test_a_consumer_span_is_a_child_of_the_headers_context(spans: InMemorySpanExporter) -> None:
    with tracing.span("ingress"):
        headers = tracing.inject({})
    with tracing.span("router", parent=headers, kind=SpanKind.CONSUMER):
        forwarded = tracing.inject({})
    with tracing.span("worker", parent=forwarded):
        pass
    ingress, router, worker = spans.get_finished_spans()
    assert ingress.context is not None and router.context is not None
    assert worker.context is not None
    assert len({s.context.trace_id for s in (ingress, router, worker)}) == 1  # type: ignore[union-attr]
    assert ingress.parent is None
    assert router.parent is not None and router.parent.span_id == ingress.context.span_id
    assert router.parent.is_remote
    assert worker.parent is not None and worker.parent.span_id == router.context.span_id
    assert router.kind is SpanKind.CONSUMER


def test_a_remote_parent_and_its_tracestate_carry_on(spans: InMemorySpanExporter) -> None:
    carrier = {"traceparent": REMOTE, "tracestate": "vendor=abc"}
    with tracing.span("router", parent=carrier):
        headers = tracing.inject({})
    assert headers["traceparent"].startswith("00-4bf92f3577b34da6a3ce929d0e0e4736-")
    assert not headers["traceparent"].endswith("-00f067aa0ba902b7-01")  # the new span's id
    assert headers["tracestate"] == "vendor=abc"
    (router,) = spans.get_finished_spans()
    assert router.parent is not None and router.parent.span_id == 0x00F067AA0BA902B7


def test_headers_without_context_start_a_new_trace(spans: InMemorySpanExporter) -> None:
    with tracing.span("outer"), tracing.span("from an old producer", parent={}):
        pass
    inner, outer = spans.get_finished_spans()
    assert inner.parent is None
    assert inner.context is not None and outer.context is not None
    assert inner.context.trace_id != outer.context.trace_id


def test_a_malformed_traceparent_starts_a_new_trace(spans: InMemorySpanExporter) -> None:
    with tracing.span("worker", parent={"traceparent": "00-zz-yy-01"}):
        pass
    (worker,) = spans.get_finished_spans()
    assert worker.parent is None


def test_start_span_is_not_current_until_ended(spans: InMemorySpanExporter) -> None:
    span = tracing.start_span("record usage", parent={"traceparent": REMOTE})
    assert tracing.current_ids() is None
    assert spans.get_finished_spans() == ()
    span.end()
    (done,) = spans.get_finished_spans()
    assert done.context is not None
    assert done.context.trace_id == 0x4BF92F3577B34DA6A3CE929D0E0E4736


def test_tag_sets_an_attribute_on_the_current_span(spans: InMemorySpanExporter) -> None:
    with tracing.span("POST /v1/chat/completions"):
        tracing.tag(tracing.REQUEST_ID, "req_1")
    (span,) = spans.get_finished_spans()
    assert span.attributes is not None
    assert span.attributes[tracing.REQUEST_ID] == "req_1"
