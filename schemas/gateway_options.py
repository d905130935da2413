"""Per-request gateway options: an ``x-gateway`` object in the request body, or
the equivalent ``x-gateway-*`` headers (a header wins over the body field).

``{"x-gateway": {"cache": false, "timeout": 30, "provider": "anthropic",
"metadata": {"feature": "chat"}}}``

* ``timeout``: seconds until the request's deadline (504 after it);
* ``provider``: pin the request to the alias's deployments of that provider,
  bypassing the routing strategy and fallbacks;
* ``metadata``: string pairs kept with the request for accounting;
* ``cache``: whether a cached answer may be used (the gateway stores the flag).

The object is never sent upstream.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

BODY_FIELD = "x-gateway"
HEADER_PREFIX = "x-gateway-"


class GatewayOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cache: bool | None = None
    timeout: float | None = Field(default=None, gt=0, le=86_400)
    provider: str | None = Field(default=None, min_length=1, max_length=64)
    metadata: dict[str, str] | None = None
