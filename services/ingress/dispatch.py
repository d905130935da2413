"""Hand one accepted request to the bus and wait for its first reply event.

Every endpoint that runs inference (chat completions, embeddings, Anthropic
messages) goes through :func:`exchange`: the reply subscription is registered
before the request is published to JetStream, then the first event is awaited
(with a lazily started watcher that cancels the handler when the client goes
away).

Who closes what: when the first event is terminal, or when ``exchange`` raises,
the reply stream is already closed. When the first event is a chunk, the caller
owns the open ``ReplyStream`` and must hand it to a streaming response, which
closes it (see :mod:`services.ingress.sse`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from schemas import subjects as s
from schemas.bus import InferenceRequest, Needs, Operation, ReplyMeta
from schemas.gateway_options import GatewayOptions
from services.ingress.auth import OPEN, Principal
from services.ingress.context import IngressContext
from services.ingress.http_errors import JSON, error_response, gateway_error_response
from services.ingress.replies import Reply, ReplyStream
from services.runtime import tracing
from services.runtime.errors import (
    GatewayError,
    ModelNotFound,
    ServiceUnavailable,
    UpstreamProtocolError,
)
from services.runtime.logs import bind_request
from services.runtime.tokens import estimate_prompt_tokens

log = logging.getLogger("igw.ingress")

WATCH_AFTER_S = 0.05
PUBLISH_TIMEOUTS_S = (1.0, 2.0, 4.0)
"""Each try's ack timeout; their sum is how long the bus may stay unavailable."""
PUBLISH_BACKOFF_S = (0.05, 0.5)
"""After a try that failed at once (no stream leader during an election), wait from
the first to at most the second, doubling, before the next one."""


def new_request_id() -> str:
    """A new request id, bound to this handler's log lines and its HTTP span."""
    request_id = f"req_{uuid.uuid4().hex}"
    bind_request(request_id)
    tracing.tag(tracing.REQUEST_ID, request_id)
    return request_id


def authorize(ctx: IngressContext, request: Request) -> Principal:
    """The caller (401 without a valid key, unless the gateway is open)."""
    return OPEN if ctx.keys is None else ctx.keys.authenticate(request.headers)


def check_model(ctx: IngressContext, model: str, principal: Principal = OPEN) -> None:
    principal.allow_model(model)
    auto = ctx.settings.routing.auto
    if model not in ctx.aliases and not (auto.enabled and model == auto.alias):
        raise ModelNotFound(
            f"The model `{model}` does not exist or you do not have access to it.",
            param="model",
        )


def needs_of(body: dict[str, Any]) -> Needs:
    """What a chat body needs of a deployment: tools, images, and context tokens."""
    vision = False
    for message in body.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list) and any(
            isinstance(p, dict) and p.get("type") == "image_url" for p in content
        ):
            vision = True
            break
    output = body.get("max_completion_tokens") or body.get("max_tokens") or 0
    return Needs(
        tools=bool(body.get("tools")),
        vision=vision,
        context_tokens=estimate_prompt_tokens(body) + (output if isinstance(output, int) else 0),
    )


def new_request(
    ctx: IngressContext,
    request_id: str,
    *,
    model: str,
    body: dict[str, Any],
    stream: bool = False,
    include_usage: bool = False,
    operation: Operation = "chat",
    options: GatewayOptions | None = None,
    principal: Principal = OPEN,
) -> InferenceRequest:
    now = time.time()
    options = options or GatewayOptions()
    return InferenceRequest(
        request_id=request_id,
        created_at=now,
        deadline=now + (options.timeout or ctx.settings.server.request_timeout_s),
        pin_provider=options.provider,
        metadata=options.metadata,
        cache=options.cache,
        needs=needs_of(body) if operation == "chat" else Needs(),
        model=model,
        key_id=principal.token,
        tenant=principal.team_id,
        user_id=principal.user_id,
        operation=operation,
        stream=stream,
        include_usage=include_usage,
        reply_subject=ctx.mux.subject(request_id),
        body=body,
    )


async def exchange(
    request: Request,
    ctx: IngressContext,
    message: InferenceRequest,
    principal: Principal = OPEN,
    headers: dict[str, str] | None = None,
) -> tuple[Reply, ReplyStream]:
    """Admit ``message`` (budgets and rate limits), publish it and return its first
    reply event (see the module docstring). Rate-limit headers go into ``headers``."""
    request_id = message.request_id
    on_close: Callable[[ReplyMeta | None], None] | None = None
    if ctx.admission is not None:
        try:
            ticket = await ctx.admission.admit(
                principal, message.model, message.body, request_id, message.deadline
            )
        except GatewayError as refused:
            ctx.metrics.refused(message.model, refused.status, refused.code)
            raise
        if ticket is not None:
            if ticket.budget_lease is not None and ticket.lease is not None:
                message.budget_lease = ticket.budget_lease  # the settler gives it back there
                message.budget_lease_hold = ticket.lease.worst
            on_close = functools.partial(ctx.admission.finish, ticket)
            if headers is not None:
                headers.update(ticket.headers)
    replies = ctx.mux.open(
        request_id, message.deadline, on_close, model=message.model, operation=message.operation
    )
    if ctx.settings.logging.log_prompts:
        log.info(
            "request %s for %s: %s", request_id, message.model, orjson.dumps(message.body).decode()
        )
    handed_over = False
    try:
        await _publish(ctx, message)
        first = await _first_event(request, replies)
        handed_over = first.meta.kind != "terminal"
        if ctx.settings.routing.for_alias(message.model).hedge:
            ctx.cancel(request_id, "hedge_lost", keep_attempt=first.meta.attempt)
        return first, replies
    except GatewayError as exc:
        replies.failure = exc.status
        ctx.cancel(request_id, "deadline" if exc.status == 504 else "error")
        raise
    except asyncio.CancelledError:
        ctx.cancel(request_id, "client_disconnected")
        raise
    finally:
        if not handed_over:
            ctx.mux.close(request_id)


def route_headers(first: Reply, headers: dict[str, str]) -> None:
    if first.meta.provider:
        headers["x-igw-provider"] = first.meta.provider
        headers["x-igw-deployment"] = first.meta.deployment
    headers["x-igw-attempts"] = str(first.meta.attempt)


def terminal_response(first: Reply, headers: dict[str, str]) -> Response:
    """The JSON answer (or OpenAI error) carried by a terminal first event."""
    route_headers(first, headers)
    if first.meta.error is not None:
        return error_response(first.meta.error, headers)
    if not first.payload:
        error = UpstreamProtocolError("the upstream finished without an answer")
        return gateway_error_response(error, headers)
    return Response(first.payload, media_type=JSON, headers=headers)


async def _publish(ctx: IngressContext, message: InferenceRequest) -> None:
    """Store the request in JetStream.

    A publish whose ack was lost is retried with the same ``Nats-Msg-Id``: if
    the first one was stored, the retry is recognised as a duplicate and the
    request still runs once. Tries go on (with a short backoff) for the sum of
    ``PUBLISH_TIMEOUTS_S`` or until the deadline, so a stream leader election
    in a cluster delays requests instead of refusing them.
    """
    payload = message.model_dump_json().encode()
    subject = s.request_subject(message.priority)
    last: Exception | None = None
    loop = asyncio.get_running_loop()
    give_up = loop.time() + min(sum(PUBLISH_TIMEOUTS_S), message.deadline - time.time())
    backoff, timeouts = PUBLISH_BACKOFF_S[0], iter(PUBLISH_TIMEOUTS_S)
    while (left := give_up - loop.time()) > 0:
        timeout = min(next(timeouts, PUBLISH_TIMEOUTS_S[-1]), left)
        try:
            await ctx.js.publish(
                subject,
                payload,
                timeout=timeout,
                headers=tracing.inject({s.HEADER_MSG_ID: message.request_id}),
            )
            return
        except Exception as exc:  # no stream leader, no server, timeout: try again
            last = exc
        # a stream electing its leader answers "no responders" at once: wait a little
        await asyncio.sleep(min(backoff, max(give_up - loop.time(), 0)))
        backoff = min(backoff * 2, PUBLISH_BACKOFF_S[1])
    log.warning("could not publish %s: %s", message.request_id, last)
    raise ServiceUnavailable("the gateway's message bus is unavailable; retry shortly")


async def _first_event(request: Request, replies: ReplyStream) -> Reply:
    """Wait for the first event, cancelling this handler if the client disconnects.

    The disconnect watcher is only started when the first event is slow to
    come, so a quick answer costs no extra task.
    """
    handler = asyncio.current_task()
    assert handler is not None
    watcher: asyncio.Task[None] | None = None

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        handler.cancel()

    def start_watching() -> None:
        nonlocal watcher
        watcher = asyncio.create_task(watch())

    timer = asyncio.get_running_loop().call_later(WATCH_AFTER_S, start_watching)
    try:
        return await replies.next()
    finally:
        timer.cancel()
        if watcher is not None:
            watcher.cancel()
