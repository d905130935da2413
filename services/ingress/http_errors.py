"""OpenAI-style error responses for every failure the HTTP surface reports."""

from __future__ import annotations

import math

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from schemas.bus import ErrorInfo
from services.runtime.errors import GatewayError, error_body

JSON = "application/json"


def error_response(info: ErrorInfo, headers: dict[str, str] | None = None) -> Response:
    out = dict(headers or {})
    if info.retry_after is not None:
        out["retry-after"] = str(max(1, math.ceil(info.retry_after)))
    body = orjson.dumps(error_body(info).model_dump())
    return Response(body, status_code=info.status, media_type=JSON, headers=out)


def gateway_error_response(exc: GatewayError, headers: dict[str, str] | None = None) -> Response:
    if exc.headers:
        headers = {**(headers or {}), **exc.headers}
    return error_response(exc.to_info(), headers)


def install_handlers(app: FastAPI) -> None:
    async def on_gateway_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, GatewayError)
        return gateway_error_response(exc)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        kind = {
            401: "authentication_error",
            403: "permission_error",
            404: "invalid_request_error",
            405: "invalid_request_error",
        }.get(exc.status_code, "api_error" if exc.status_code >= 500 else "invalid_request_error")
        message = str(exc.detail)
        if exc.status_code == 404:
            message = f"Unknown path: {request.method} {request.url.path}"
        if exc.status_code == 405:
            message = f"Method {request.method} is not allowed on {request.url.path}"
        info = ErrorInfo(status=exc.status_code, type=kind, message=message, code=None)
        return error_response(info, dict(exc.headers or {}))

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        param = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or None
        info = ErrorInfo(
            status=400, type="invalid_request_error", message=str(first.get("msg")), param=param
        )
        return error_response(info)

    app.add_exception_handler(GatewayError, on_gateway_error)
    app.add_exception_handler(HTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
