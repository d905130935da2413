"""Relay a request's chunks to the client as OpenAI-style Server-Sent Events.

Chunks are relayed as the worker sent them, without parsing. The stream ends
with ``data: [DONE]`` after a clean finish. A failure after the first byte is
sent as an ``{"error": ...}`` event (which OpenAI SDKs raise), never as a
made-up ``finish_reason``. If the client goes away, the worker is told to stop
the upstream call.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
from sse_starlette import EventSourceResponse

from schemas.bus import ErrorInfo
from services.ingress.context import IngressContext
from services.ingress.replies import Reply, ReplyStream
from services.runtime.errors import GatewayError, UpstreamProtocolError, error_body

DONE = b"data: [DONE]\n\n"


def stream_response(
    ctx: IngressContext, replies: ReplyStream, first: Reply, headers: dict[str, str]
) -> EventSourceResponse:
    return EventSourceResponse(
        _relay(ctx, replies, first), headers=headers, ping=15, send_timeout=30
    )


def _event(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"


def _error_event(info: ErrorInfo) -> bytes:
    return _event(orjson.dumps(error_body(info).model_dump()))


async def _relay(ctx: IngressContext, replies: ReplyStream, first: Reply) -> AsyncIterator[bytes]:
    finished = False
    delivery, expected = first.meta.delivery, first.meta.seq + 1
    try:
        yield _event(first.payload)
        while True:
            try:
                reply = await replies.next()
            except GatewayError as exc:
                ctx.cancel(replies.request_id, "deadline" if exc.status == 504 else "error")
                finished = True
                yield _error_event(exc.to_info())
                return
            meta = reply.meta
            if meta.delivery != delivery or meta.seq != expected:
                lost = UpstreamProtocolError(
                    "the worker serving this stream was lost mid-way; retry the request"
                )
                ctx.cancel(replies.request_id, "stream_broken")
                finished = True
                yield _error_event(lost.to_info())
                return
            expected += 1
            if meta.kind == "terminal":
                finished = True
                yield DONE if meta.error is None else _error_event(meta.error)
                return
            yield _event(reply.payload)
    finally:
        if not finished:
            ctx.cancel(replies.request_id, "client_disconnected")
        ctx.mux.close(replies.request_id)
