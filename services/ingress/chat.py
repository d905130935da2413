"""``POST /v1/chat/completions``: validate, publish to JetStream, answer from
the reply stream as JSON or as Server-Sent Events.

Registered as a plain Starlette route (not a FastAPI-decorated one): FastAPI's
dependency machinery measured about 0.17 ms per request on the reference
machine, which is a tenth of the whole latency budget.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from schemas.openai_chat import ChatCompletionRequest
from services.ingress import cache, idempotency
from services.ingress.body import read_json_object, validate
from services.ingress.context import IngressContext
from services.ingress.dispatch import (
    authorize,
    check_model,
    exchange,
    new_request,
    new_request_id,
    route_headers,
    terminal_response,
)
from services.ingress.http_errors import JSON, gateway_error_response
from services.ingress.options import read_options
from services.ingress.sse import stream_response
from services.runtime.errors import GatewayError


async def chat_completions(request: Request) -> Response:
    ctx: IngressContext = request.app.state.ctx
    request_id = new_request_id()
    headers = {"x-request-id": request_id}
    idempotency_key = request.headers.get(idempotency.HEADER)
    claim: idempotency.Claim | None = None
    try:
        principal = authorize(ctx, request)
        data = await read_json_object(request, ctx.settings.server.max_body_bytes)
        chat = validate(ChatCompletionRequest, data)
        check_model(ctx, chat.model, principal)
        options = read_options(ctx, chat.model, data, request.headers)
        if idempotency_key is not None and ctx.idempotency is not None:
            timeout = options.timeout or ctx.settings.server.request_timeout_s
            won = await ctx.idempotency.begin(idempotency_key, principal, data, request_id, timeout)
            if isinstance(won, Response):
                return won  # the original's answer, replayed
            claim = won
        key = None
        if ctx.cache is not None and cache.wanted(ctx.settings.cache, options, chat.wants_stream):
            key = cache.key_of(chat.model, data)
            if (hit := await ctx.cache.get(key)) is not None:
                headers["x-cache"] = "HIT"
                ctx.cache.record_hit(ctx.js, cache.hit_usage(request_id, chat.model, principal))
                ctx.metrics.cache_hit(chat.model)
                hit_reply = Response(hit, media_type=JSON, headers=headers)
                return hit_reply if claim is None else await claim.finish(hit_reply)
            headers["x-cache"] = "MISS"
        message = new_request(
            ctx,
            request_id,
            model=chat.model,
            body=data,
            stream=chat.wants_stream,
            include_usage=chat.wants_stream_usage,
            options=options,
            principal=principal,
        )
        first, replies = await exchange(request, ctx, message, principal, headers)
    except GatewayError as exc:
        if claim is not None:
            claim.release()
        return gateway_error_response(exc, headers)
    except BaseException:  # the client left, or a bug: a retry must run afresh
        if claim is not None:
            claim.release()
        raise
    if first.meta.kind == "terminal":
        if key is not None and ctx.cache is not None and first.meta.error is None and first.payload:
            ctx.cache.put(key, first.payload)
        answer = terminal_response(first, headers)
        return answer if claim is None else await claim.finish(answer)
    route_headers(first, headers)
    if claim is not None:
        return stream_response(ctx, replies, first, headers, tap=claim.tap(headers))
    return stream_response(ctx, replies, first, headers)
