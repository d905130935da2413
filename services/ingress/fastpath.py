"""A thin ASGI layer in front of the FastAPI app for the request path.

``POST /v1/chat/completions`` skips FastAPI's middleware stack (exception
wrappers, exit stacks, route matching over every route): measured at about a
tenth of the ingress's CPU per request. Everything else, including errors the
handler does not catch, goes through FastAPI as usual (whose own telemetry
makes their HTTP spans). With tracing on, the request path gets its HTTP
server span here, covering the whole response (a stream until its last event).

While the replica drains (``draining``, set on SIGTERM: see ``shutdown``), every
request but ``/health`` and ``/ready`` gets a 503 ``service_unavailable`` error.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING

from fastapi import FastAPI
from opentelemetry.trace import SpanKind, StatusCode
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from services.ingress.http_errors import gateway_error_response
from services.runtime import tracing
from services.runtime.errors import GatewayError, ServiceUnavailable

if TYPE_CHECKING:
    from services.ingress.context import IngressContext

log = logging.getLogger("igw.ingress")

Handler = Callable[[Request], Awaitable[Response]]

OPEN_WHILE_DRAINING = frozenset({"/health", "/ready"})
DRAINING = ServiceUnavailable(
    "this gateway replica is shutting down; send the request to another one",
    code="shutting_down",
    retry_after=1,
)


class FastPath:
    def __init__(self, app: FastAPI, routes: Mapping[tuple[str, str], Handler]) -> None:
        self.app = app
        self.routes = routes
        self.draining = False

    @property
    def context(self) -> IngressContext | None:
        """The lifespan's context; None before start-up finished."""
        return getattr(self.app.state, "ctx", None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if self.draining and scope["path"] not in OPEN_WHILE_DRAINING:
                refusal = gateway_error_response(DRAINING, {"connection": "close"})
                await refusal(scope, receive, send)
                return
            handler = self.routes.get((scope["method"], scope["path"]))
            if handler is not None:
                scope["app"] = self.app
                if tracing.ENABLED:
                    await self._traced(handler, scope, receive, send)
                    return
                response = await _respond(handler, Request(scope, receive))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _traced(self, handler: Handler, scope: Scope, receive: Receive, send: Send) -> None:
        method, path = scope["method"], scope["path"]
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        attributes = {
            "http.request.method": method,
            "http.route": path,
            "url.path": path,
            "url.scheme": scope.get("scheme", "http"),
        }
        name = f"{method} {path}"
        with tracing.span(
            name, parent=carrier, kind=SpanKind.SERVER, attributes=attributes
        ) as span:
            response = await _respond(handler, Request(scope, receive))
            span.set_attribute("http.response.status_code", response.status_code)
            if response.status_code >= 500:
                span.set_attribute("error.type", str(response.status_code))
                span.set_status(StatusCode.ERROR)
            await response(scope, receive, send)


async def _respond(handler: Handler, request: Request) -> Response:
    try:
        return await handler(request)
    except GatewayError as exc:
        return gateway_error_response(exc)
    except Exception:
        log.exception("unexpected error on %s", request.url.path)
        return gateway_error_response(GatewayError("internal gateway error"))
