"""``GET /api/v1/providers/status``: per deployment, its circuit-breaker state,
recent error rate, p50/p95 latency, time to first token, attempts in flight and
attempts queued, as a router replica sees them (replicas share breaker state)."""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response

from schemas import subjects as s
from services.ingress.context import IngressContext
from services.ingress.dispatch import authorize
from services.ingress.http_errors import JSON, gateway_error_response
from services.runtime.errors import GatewayError, ServiceUnavailable

STATUS_TIMEOUT_S = 2.0


async def providers_status(request: Request) -> Response:
    ctx: IngressContext = request.app.state.ctx
    try:
        authorize(ctx, request).require("viewer")
    except GatewayError as exc:
        return gateway_error_response(exc)
    try:
        reply = await ctx.nc.request(s.ROUTER_STATUS, b"", timeout=STATUS_TIMEOUT_S)
    except Exception:  # no router answered (none running, or the bus is down)
        return gateway_error_response(ServiceUnavailable("no router answered; is one running?"))
    rows = orjson.loads(reply.data)
    return Response(orjson.dumps({"object": "list", "data": rows}), media_type=JSON)
