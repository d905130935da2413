"""The accounting span of a usage event ends with the message's fate."""

from __future__ import annotations

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from services.accounting.traced_ack import SPAN_NAME, traced
from tests.unit.accounting.fakes import FakeHandle

PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


class FakeMsg(FakeHandle):
    def __init__(self, headers: dict[str, str] | None) -> None:
        super().__init__()
        self.headers = headers
        self.subject = "igw.usage.openai"


def test_off_the_message_is_its_own_handle() -> None:
    msg = FakeMsg({"traceparent": PARENT})
    assert traced(msg) is msg


async def test_an_acked_event_ends_a_child_span(spans: InMemorySpanExporter) -> None:
    msg = FakeMsg({"traceparent": PARENT, "Nats-Msg-Id": "req_1:2"})
    handle = traced(msg)
    assert spans.get_finished_spans() == ()
    await handle.ack()
    assert msg.verdicts == ["ack"]
    (span,) = spans.get_finished_spans()
    assert span.name == SPAN_NAME and span.kind is SpanKind.CONSUMER
    assert span.context is not None
    assert span.context.trace_id == 0x4BF92F3577B34DA6A3CE929D0E0E4736
    assert span.parent is not None and span.parent.span_id == 0x00F067AA0BA902B7
    attributes = span.attributes or {}
    assert attributes["igw.request_id"] == "req_1" and attributes["igw.attempt"] == 2
    assert attributes["messaging.destination.name"] == "igw.usage.openai"
    assert span.status.status_code is StatusCode.UNSET


async def test_nak_and_term_end_it_as_errors(spans: InMemorySpanExporter) -> None:
    nak, term = FakeMsg(None), FakeMsg({"traceparent": PARENT})
    await traced(nak).nak(delay=2.0)
    await traced(term).term()
    assert nak.verdicts == ["nak"] and nak.nak_delays == [2.0]
    assert term.verdicts == ["term"]
    first, second = spans.get_finished_spans()
    assert first.parent is None  # no context on the event: a trace of its own
    assert first.status.status_code is StatusCode.ERROR
    assert second.status.status_code is StatusCode.ERROR
