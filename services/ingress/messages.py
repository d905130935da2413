"""``POST /v1/messages``: the Anthropic Messages API in front of any configured model.

The request is translated into the OpenAI chat body the bus carries
(:mod:`services.ingress.anthropic_request`), runs through the same path as
``/v1/chat/completions``, and the answer is translated back
(:mod:`services.ingress.anthropic_response`): a ``message`` object, or the
Anthropic stream event sequence. Errors are Anthropic error objects
(``{"type": "error", "error": {"type", "message"}}``) with the gateway's status.
"""

from __future__ import annotations

import math

import orjson
from starlette.requests import Request
from starlette.responses import Response

from schemas.anthropic_messages import MessagesRequest
from schemas.bus import ErrorInfo, ReplyMeta
from services.ingress.anthropic_request import to_openai
from services.ingress.anthropic_response import StreamTranslator, error_object, to_message
from services.ingress.body import read_json_object, validate
from services.ingress.context import IngressContext
from services.ingress.dispatch import (
    authorize,
    check_model,
    exchange,
    new_request,
    new_request_id,
    route_headers,
)
from services.ingress.http_errors import JSON
from services.ingress.options import read_options
from services.ingress.sse import stream_response
from services.runtime.errors import GatewayError, UpstreamProtocolError


class AnthropicRenderer:
    def __init__(self, model: str, request_id: str) -> None:
        self._translator = StreamTranslator(model, request_id)

    def chunk(self, payload: bytes) -> bytes:
        return self._translator.chunk(payload)

    def done(self, meta: ReplyMeta) -> bytes:
        usage = meta.usage.model_dump() if meta.usage is not None else None
        return self._translator.done(usage)

    def error(self, info: ErrorInfo) -> bytes:
        return self._translator.error(info)


def _error(info: ErrorInfo, headers: dict[str, str]) -> Response:
    out = dict(headers)
    if info.retry_after is not None:
        out["retry-after"] = str(max(1, math.ceil(info.retry_after)))
    body = orjson.dumps(error_object(info))
    return Response(body, status_code=info.status, media_type=JSON, headers=out)


async def create_message(request: Request) -> Response:
    ctx: IngressContext = request.app.state.ctx
    request_id = new_request_id()
    headers = {"x-request-id": request_id, "request-id": request_id}
    try:
        principal = authorize(ctx, request)
        data = await read_json_object(request, ctx.settings.server.max_body_bytes)
        body = validate(MessagesRequest, data)
        check_model(ctx, body.model, principal)
        options = read_options(ctx, body.model, data, request.headers)
        message = new_request(
            ctx,
            request_id,
            model=body.model,
            body=to_openai(body),
            stream=bool(body.stream),
            include_usage=True,
            options=options,
            principal=principal,
        )
        first, replies = await exchange(request, ctx, message, principal, headers)
    except GatewayError as exc:
        return _error(exc.to_info(), headers)
    route_headers(first, headers)
    if first.meta.kind != "terminal":
        render = AnthropicRenderer(body.model, request_id)
        return stream_response(ctx, replies, first, headers, render)
    if first.meta.error is not None:
        return _error(first.meta.error, headers)
    if not first.payload:
        return _error(
            UpstreamProtocolError("the upstream finished without an answer").to_info(), headers
        )
    answer = to_message(orjson.loads(first.payload), body.model, request_id)
    return Response(orjson.dumps(answer), media_type=JSON, headers=headers)
