"""``POST /v1/embeddings``: the same path as chat (JetStream, router, a provider
worker), answered with the provider's embeddings as an OpenAI list object."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from schemas.openai_embeddings import EmbeddingsRequest
from services.ingress import idempotency
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
    idempotency_key = request.headers.get(idempotency.HEADER)
    claim: idempotency.Claim | None = None
    try:
        principal = authorize(ctx, request)
        data = await read_json_object(request, ctx.settings.server.max_body_bytes)
        body = validate(EmbeddingsRequest, data)
        check_model(ctx, body.model, principal)
        options = read_options(ctx, body.model, data, request.headers)
        if idempotency_key is not None and ctx.idempotency is not None:
            timeout = options.timeout or ctx.settings.server.request_timeout_s
            won = await ctx.idempotency.begin(idempotency_key, principal, data, request_id, timeout)
            if isinstance(won, Response):
                return won  # the original's answer, replayed
            claim = won
        message = new_request(
            ctx,
            request_id,
            model=body.model,
            body=data,
            operation="embeddings",
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
    if first.meta.kind != "terminal":  # a worker never streams embeddings
        ctx.cancel(request_id, "error")
        ctx.mux.close(replies.request_id)
        error = UpstreamProtocolError("the worker streamed an embeddings answer")
        if claim is not None:
            claim.release()
        return gateway_error_response(error, headers)
    answer = terminal_response(first, headers)
    return answer if claim is None else await claim.finish(answer)
