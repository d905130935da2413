"""``POST /infer``: one prompt in, one answer out, over the chat path.

The prompt becomes a one-message chat request for ``model`` (``auto`` by
default, so the router picks by latency and cost); the answer reports the
text, the provider that served it, the gateway's latency and the cost at the
deployment's prices. Errors are OpenAI error objects.
"""

from __future__ import annotations

import time

import orjson
from starlette.requests import Request
from starlette.responses import Response

from schemas.infer import InferRequest, InferResponse
from schemas.openai_chat import Usage
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
from services.ingress.http_errors import JSON, error_response, gateway_error_response
from services.runtime.errors import GatewayError, UpstreamProtocolError
from services.runtime.pricing import cost_usd


async def infer(request: Request) -> Response:
    ctx: IngressContext = request.app.state.ctx
    started = time.monotonic()
    request_id = new_request_id()
    headers = {"x-request-id": request_id}
    try:
        principal = authorize(ctx, request)
        data = await read_json_object(request, ctx.settings.server.max_body_bytes)
        body = validate(InferRequest, data)
        check_model(ctx, body.model, principal)
        chat = {
            "model": body.model,
            "messages": [{"role": "user", "content": body.prompt}],
            **({"max_tokens": body.max_tokens} if body.max_tokens else {}),
            **({"temperature": body.temperature} if body.temperature is not None else {}),
        }
        first, _ = await exchange(
            request,
            ctx,
            new_request(ctx, request_id, model=body.model, body=chat, principal=principal),
            principal,
            headers,
        )
    except GatewayError as exc:
        return gateway_error_response(exc, headers)
    route_headers(first, headers)
    if first.meta.error is not None:
        return error_response(first.meta.error, headers)
    try:
        completion = orjson.loads(first.payload)
        output = completion["choices"][0]["message"].get("content") or ""
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
        error = UpstreamProtocolError("the upstream finished without an answer")
        return gateway_error_response(error, headers)
    usage = first.meta.usage or Usage()
    deployment = ctx.settings.deployment(first.meta.deployment)
    cost = (
        cost_usd(
            deployment.price, usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens
        )
        if deployment is not None
        else 0
    )
    answer = InferResponse(
        output=output,
        provider=first.meta.provider,
        deployment=first.meta.deployment,
        model=deployment.alias if deployment else body.model,
        latency_ms=round((time.monotonic() - started) * 1000, 1),
        cost=float(cost),
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
    )
    return Response(answer.model_dump_json(), media_type=JSON, headers=headers)
