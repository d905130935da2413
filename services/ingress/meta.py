"""``/v1/models``, ``/health``, ``/ready`` (503 while the replica drains) and ``/metrics``."""

from __future__ import annotations

import time

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response

from schemas import subjects as s
from schemas.openai_chat import ModelCard, ModelList
from services.ingress.context import IngressContext
from services.ingress.dispatch import authorize
from services.ingress.http_errors import JSON, gateway_error_response
from services.runtime.errors import GatewayError
from services.runtime.version import VERSION


async def list_models(request: Request) -> Response:
    ctx: IngressContext = request.app.state.ctx
    try:
        principal = authorize(ctx, request)
    except GatewayError as exc:
        return gateway_error_response(exc)
    cards = [
        ModelCard(id=alias, created=int(ctx.started), owned_by=dep.owned_by or dep.provider)
        for alias, dep in sorted(ctx.aliases.items())
        if not principal.models or alias in principal.models
    ]
    auto = ctx.settings.routing.auto
    allowed = not principal.models or auto.alias in principal.models
    if auto.enabled and auto.alias not in ctx.aliases and allowed:
        cards.append(ModelCard(id=auto.alias, created=int(ctx.started), owned_by="igw"))
    return Response(ModelList(data=cards).model_dump_json(), media_type=JSON)


async def health(request: Request) -> Response:
    ctx: IngressContext = request.app.state.ctx
    body = {
        "status": "ok",
        "version": VERSION,
        "uptime_seconds": round(time.time() - ctx.started, 1),
        "in_flight": ctx.mux.in_flight,
    }
    return Response(orjson.dumps(body), media_type=JSON)


async def ready(request: Request) -> Response:
    ctx: IngressContext = request.app.state.ctx
    if ctx.draining:
        body = {"status": "draining", "checks": {"accepting": False}}
        return Response(orjson.dumps(body), status_code=503, media_type=JSON)
    checks: dict[str, bool] = {"nats_connected": ctx.nc.is_connected}
    if checks["nats_connected"]:
        try:
            await ctx.js.stream_info(s.STREAM_REQUESTS)
            checks["streams"] = True
        except Exception:  # not found, timeout: either way not ready
            checks["streams"] = False
    else:
        checks["streams"] = False
    ok = all(checks.values())
    body = {"status": "ready" if ok else "not_ready", "checks": checks}
    return Response(orjson.dumps(body), status_code=200 if ok else 503, media_type=JSON)


async def metrics(request: Request) -> Response:
    """Prometheus exposition of this ingress (``services.runtime.metrics``)."""
    ctx: IngressContext = request.app.state.ctx
    body = generate_latest(ctx.metrics.registry)
    return Response(body, headers={"content-type": CONTENT_TYPE_LATEST})
