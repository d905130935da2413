"""``POST /v1/embeddings``: the same path as chat (JetStream, router, a provider
worker), answered with the provider's embeddings as an OpenAI list object."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from schemas.openai_embeddings import EmbeddingsRequest
from services.ingress.body import read_json_object, validate
from services.ingress.context import IngressContext
from services.ingress.dispatch import (
    authorize,
    check_model,
    exchange,
    new_request,
    new_request_id,
    terminal_response,
)
from services.ingress.http_errors import gateway_error_response
from services.ingress.options import read_options
from services.runtime.errors import GatewayError, UpstreamProtocolError


async def create_embeddings(request: Request) -> Response:
    ctx: IngressContext = request.app.state.ctx
    request_id = new_request_id()
    headers = {"x-request-id": request_id}
    try:
        principal = authorize(ctx, request)
        data = await read_json_object(request, ctx.settings.server.max_body_bytes)
        body = validate(EmbeddingsRequest, data)
        check_model(ctx, body.model, principal)
        options = read_options(ctx, body.model, data, request.headers)
        message = new_request(
            ctx,
            request_id,
            model=body.model,
            body=data,
            operation="embeddings",
            options=options,
            principal=principal,
        )
        first, replies = await exchange(request, ctx, message)
    except GatewayError as exc:
        return gateway_error_response(exc, headers)
    if first.meta.kind != "terminal":  # a worker never streams embeddings
        ctx.cancel(request_id, "error")
        ctx.mux.close(replies.request_id)
        error = UpstreamProtocolError("the worker streamed an embeddings answer")
        return gateway_error_response(error, headers)
    return terminal_response(first, headers)
