"""Reading and validating a JSON request body, with a size limit."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request

from services.runtime.errors import InvalidJSON, PayloadTooLarge
from services.runtime.validation import validate

__all__ = ["read_json_object", "validate"]


async def read_json_object(request: Request, limit: int) -> dict[str, Any]:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the request body is larger than the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the request body is larger than the limit of {limit} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw:
        raise InvalidJSON("the request body is empty; expected a JSON object")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidJSON(f"the request body is not valid JSON: {exc.msg}") from None
    if not isinstance(data, dict):
        raise InvalidJSON("the request body must be a JSON object")
    return data
