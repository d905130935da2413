"""Read the per-request gateway options (``x-gateway`` body object or
``x-gateway-*`` headers, see :mod:`schemas.gateway_options`) and check them
against the configured model."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.datastructures import Headers

from schemas.gateway_options import BODY_FIELD, HEADER_PREFIX, GatewayOptions
from services.ingress.body import validate
from services.ingress.context import IngressContext
from services.runtime.errors import InvalidRequest

_TRUE = frozenset({"1", "true", "yes", "on"})


def _from_headers(headers: Headers) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ("cache", "timeout", "provider", "metadata"):
        value = headers.get(HEADER_PREFIX + name)
        if value is None:
            continue
        if name == "cache":
            out[name] = value.strip().lower() in _TRUE
        elif name == "metadata":
            try:
                out[name] = orjson.loads(value)
            except orjson.JSONDecodeError:
                raise InvalidRequest(
                    f"header {HEADER_PREFIX}metadata must be a JSON object",
                    param=f"{HEADER_PREFIX}metadata",
                ) from None
        else:
            out[name] = value.strip()
    return out


def read_options(
    ctx: IngressContext, model: str, body: dict[str, Any], headers: Headers
) -> GatewayOptions:
    raw = body.get(BODY_FIELD)
    if raw is not None and not isinstance(raw, dict):
        raise InvalidRequest(f"'{BODY_FIELD}' must be an object", param=BODY_FIELD)
    merged = {**(raw or {}), **_from_headers(headers)}
    if not merged:
        return GatewayOptions()
    try:
        options = validate(GatewayOptions, merged)
    except InvalidRequest as exc:
        raise InvalidRequest(
            f"{BODY_FIELD}: {exc.message}",
            param=f"{BODY_FIELD}.{exc.param}" if exc.param else BODY_FIELD,
            code=exc.code,
        ) from None
    if options.provider is not None:
        providers = {m.provider for m in ctx.settings.models if m.alias == model}
        if options.provider not in providers:
            raise InvalidRequest(
                f"model `{model}` has no deployment of provider {options.provider!r}; "
                f"it has: {', '.join(sorted(providers))}",
                param=f"{BODY_FIELD}.provider",
            )
    return options
