"""Which OpenAI request parameters a provider understands, and what happens to the rest.

Each adapter declares the parameters it translates. :func:`unsupported` lists the
others present in a request; :func:`apply_policy` drops them (the default,
``drop_params: true`` on the deployment) or rejects the request with a 400 that
names the first one (``drop_params: false``).
"""

from __future__ import annotations

from typing import Any, Final

from services.runtime.errors import InvalidRequest
from services.runtime.settings import ModelDeployment

ALWAYS: Final = frozenset({"model", "messages", "stream", "stream_options", "user", "metadata"})
"""Fields every adapter accepts (``user`` and ``metadata`` are the gateway's own to log)."""


def unsupported(body: dict[str, Any], supported: frozenset[str]) -> list[str]:
    return [k for k, v in body.items() if v is not None and k not in supported and k not in ALWAYS]


def apply_policy(
    body: dict[str, Any], supported: frozenset[str], deployment: ModelDeployment
) -> dict[str, Any]:
    """``body`` without the parameters the provider does not understand."""
    extra = unsupported(body, supported)
    if not extra:
        return body
    if not deployment.drop_params:
        raise InvalidRequest(
            f"parameter {extra[0]!r} is not supported by provider {deployment.provider!r} "
            f"(deployment {deployment.deployment}); set drop_params: true to ignore it",
            code="unsupported_parameter",
            param=extra[0],
        )
    return {k: v for k, v in body.items() if k not in extra}
