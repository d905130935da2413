"""The accounting span of one usage event: from the moment it is fetched until
the writer decides its fate (stored and acked, nak'ed after a failed insert, or
terminated as malformed), as a child of the trace context on its headers.

The writer knows nothing of tracing: it gets an ``AckHandle`` that ends the
span when it acks, naks or terminates. With tracing off, ``traced`` hands the
message back unwrapped.
"""

from __future__ import annotations

from typing import Any

from opentelemetry.trace import Span, SpanKind, StatusCode

from schemas.subjects import HEADER_MSG_ID
from services.accounting.writer import AckHandle
from services.runtime import tracing

SPAN_NAME = "record usage"


class TracedAck:
    """An ``AckHandle`` that ends ``span`` with the message's fate."""

    def __init__(self, msg: AckHandle, span: Span) -> None:
        self._msg = msg
        self._span = span

    async def ack(self) -> None:
        try:
            await self._msg.ack()
        finally:
            self._span.end()

    async def nak(self, delay: float | None = None) -> None:
        self._span.set_status(StatusCode.ERROR, "not stored; redelivered later")
        try:
            await self._msg.nak(delay=delay)
        finally:
            self._span.end()

    async def term(self) -> None:
        self._span.set_status(StatusCode.ERROR, "malformed usage event; terminated")
        try:
            await self._msg.term()
        finally:
            self._span.end()


def traced(msg: Any) -> AckHandle:
    """``msg`` (a nats-py ``Msg``) as the writer's handle, with its span when tracing is on."""
    if not tracing.ENABLED:
        return msg  # type: ignore[no-any-return]
    headers: dict[str, str] = msg.headers or {}
    attributes: dict[str, str | int] = {
        "messaging.system": "nats",
        "messaging.destination.name": msg.subject,
    }
    if msg_id := headers.get(HEADER_MSG_ID):  # request_id:attempt
        attributes["messaging.message.id"] = msg_id
        request_id, _, attempt = msg_id.rpartition(":")
        if request_id and attempt.isdigit():
            attributes[tracing.REQUEST_ID] = request_id
            attributes[tracing.ATTEMPT] = int(attempt)
    span = tracing.start_span(
        SPAN_NAME, parent=headers, kind=SpanKind.CONSUMER, attributes=attributes
    )
    return TracedAck(msg, span)
