"""Relay a request's chunks to the client as Server-Sent Events.

A :class:`Renderer` decides how each event looks: :class:`OpenAIRenderer`
relays chunks as the worker sent them, without parsing, and ends with
``data: [DONE]`` after a clean finish; the Anthropic-compatible endpoint
passes its own renderer. A failure after the first byte is
sent as an ``{"error": ...}`` event (which OpenAI SDKs raise), never as a
made-up ``finish_reason``. If the client goes away, the worker is told to stop
the upstream call.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

import orjson
from sse_starlette import EventSourceResponse

from schemas.bus import ErrorInfo, ReplyMeta
from services.ingress.context import IngressContext
from services.ingress.replies import Reply, ReplyStream
from services.runtime.errors import GatewayError, UpstreamProtocolError, error_body

DONE = b"data: [DONE]\n\n"
SSE_GRACE_MARGIN_S = 1.0
"""sse-starlette's own cut comes this long after the ingress ended late streams with an error."""


class Renderer(Protocol):
    def chunk(self, payload: bytes) -> bytes: ...

    def done(self, meta: ReplyMeta) -> bytes: ...

    def error(self, info: ErrorInfo) -> bytes: ...


class OpenAIRenderer:
    def chunk(self, payload: bytes) -> bytes:
        return _event(payload)

    def done(self, meta: ReplyMeta) -> bytes:
        return DONE

    def error(self, info: ErrorInfo) -> bytes:
        return _error_event(info)


class Tap(Protocol):
    """Sees a stream go by (an ``Idempotency-Key`` records it): ``wrap`` gets the
    renderer, ``watch`` the events."""

    def wrap(self, render: Renderer) -> Renderer: ...

    def watch(self, events: AsyncIterator[bytes]) -> AsyncIterator[bytes]: ...


_OPENAI = OpenAIRenderer()


def stream_response(
    ctx: IngressContext,
    replies: ReplyStream,
    first: Reply,
    headers: dict[str, str],
    render: Renderer = _OPENAI,
    tap: Tap | None = None,
) -> EventSourceResponse:
    if tap is None:
        events = _relay(ctx, replies, first, render)
    else:
        events = tap.watch(_relay(ctx, replies, first, tap.wrap(render)))
    # sse-starlette ends every stream as soon as uvicorn is told to exit; give them
    # the shutdown grace instead (the ingress ends late ones itself, see shutdown)
    grace = ctx.settings.server.shutdown_grace_s + SSE_GRACE_MARGIN_S
    return EventSourceResponse(
        events, headers=headers, ping=15, send_timeout=30, shutdown_grace_period=grace
    )


def _event(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"


def _error_event(info: ErrorInfo) -> bytes:
    return _event(orjson.dumps(error_body(info).model_dump()))


async def _relay(
    ctx: IngressContext, replies: ReplyStream, first: Reply, render: Renderer
) -> AsyncIterator[bytes]:
    """Yield SSE bytes; events that are already queued go out in one write."""
    check = _Sequence(first)
    finished = False
    try:
        yield render.chunk(first.payload)
        while True:
            try:
                reply = await replies.next()
            except GatewayError as exc:
                ctx.cancel(replies.request_id, "deadline" if exc.status == 504 else "error")
                finished = True
                yield render.error(exc.to_info())
                return
            out: list[bytes] = []
            pending: Reply | None = reply
            while pending is not None:
                reply = pending
                if not check.follows(reply):
                    replies.failure = LOST.status
                    ctx.cancel(replies.request_id, "stream_broken")
                    finished = True
                    out.append(render.error(LOST.to_info()))
                    break
                if reply.meta.kind == "terminal":
                    finished = True
                    error = reply.meta.error
                    out.append(render.done(reply.meta) if error is None else render.error(error))
                    break
                out.append(render.chunk(reply.payload))
                pending = replies.next_ready()
            yield b"".join(out)
            if finished:
                return
    finally:
        if not finished:
            ctx.cancel(replies.request_id, "client_disconnected")
        ctx.mux.close(replies.request_id)


LOST = UpstreamProtocolError("the worker serving this stream was lost mid-way; retry the request")


class _Sequence:
    """Events of one stream must come from one delivery, numbered without gaps."""

    def __init__(self, first: Reply) -> None:
        self.delivery = first.meta.delivery
        self.expected = first.meta.seq + 1

    def follows(self, reply: Reply) -> bool:
        if reply.meta.delivery != self.delivery or reply.meta.seq != self.expected:
            return False
        self.expected += 1
        return True
