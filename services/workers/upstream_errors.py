"""Translate transport failures and provider error responses into gateway errors."""

from __future__ import annotations

import contextlib
import email.utils
import re
import time
from collections.abc import Iterator, Mapping
from typing import Any

import aiohttp
import orjson

from services.runtime.errors import (
    ContentFiltered,
    ContextWindowExceeded,
    GatewayError,
    UpstreamBadRequest,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
    UpstreamUnavailable,
    upstream_error_for_status,
)


@contextlib.contextmanager
def translate_transport_errors(deployment: str) -> Iterator[None]:
    """Turn aiohttp exceptions raised inside the block into gateway errors."""
    try:
        yield
    except GatewayError:
        raise
    except aiohttp.ClientConnectorError as exc:
        raise UpstreamUnavailable(f"cannot reach deployment {deployment}: {_reason(exc)}") from exc
    except (aiohttp.ServerTimeoutError, aiohttp.SocketTimeoutError) as exc:
        raise UpstreamTimeout(f"deployment {deployment} timed out: {_reason(exc)}") from exc
    except (aiohttp.ClientError, ConnectionError) as exc:
        raise UpstreamProtocolError(
            f"deployment {deployment} broke the connection: {_reason(exc)}"
        ) from exc


_CONTEXT = re.compile(
    r"context.length|context window|maximum context|prompt is too long|input is too long"
    r"|too many (input )?tokens|exceeds? the (maximum|max)[a-z ]*tokens"
    r"|reduce the length of the messages",
    re.IGNORECASE,
)
_CONTENT = re.compile(
    r"content.(management )?polic|content_filter|content filter|blocked (due to|by) safety",
    re.IGNORECASE,
)


def refine(error: GatewayError) -> GatewayError:
    """Name what an upstream 400 really was, whatever the provider's wording: a prompt
    over the context window, or a content-policy refusal (both worth a fallback)."""
    if type(error) is not UpstreamBadRequest:
        return error
    text = f"{error.code or ''} {error.message}"
    if _CONTEXT.search(text):
        return ContextWindowExceeded(error.message, param=error.param)
    if _CONTENT.search(text):
        return ContentFiltered(error.message, param=error.param)
    return error


def error_from_response(
    deployment: str, status: int, headers: Mapping[str, str], body: bytes
) -> GatewayError:
    message = _provider_message(body) or "no details"
    return upstream_error_for_status(
        status,
        f"deployment {deployment} answered {status}: {message}",
        parse_retry_after(headers),
    )


def error_from_stream_payload(deployment: str, payload: dict[str, Any]) -> GatewayError:
    error = payload.get("error")
    message = error.get("message") if isinstance(error, dict) else str(error)
    return UpstreamError(f"deployment {deployment} sent an error mid-stream: {message}")


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    if value := headers.get("retry-after-ms"):
        with contextlib.suppress(ValueError):
            return max(0.0, float(value) / 1000)
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        with contextlib.suppress(TypeError, ValueError):
            parsed = email.utils.parsedate_to_datetime(value)
            return max(0.0, parsed.timestamp() - time.time())
        return None


def _provider_message(body: bytes) -> str | None:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        text = body[:300].decode("utf-8", "replace").strip()
        return text or None
    if isinstance(data, dict):
        error = data.get("error", data)
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        if isinstance(error, str):
            return error
    return None


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
