"""Build the upstream request body from a validated client body.

The client's body never chooses where or how the gateway connects: fields
that some gateways honour for that (``api_base``, ``base_url``, keys, extra
headers) are removed at the top level and inside messages.
"""

from __future__ import annotations

from typing import Any, Final

CONNECTION_FIELDS: Final = frozenset(
    {
        "api_base",
        "base_url",
        "api_key",
        "api_version",
        "organization",
        "custom_llm_provider",
        "extra_headers",
        "headers",
        "x-gateway",
    }
)


def upstream_body(body: dict[str, Any], upstream_model: str, stream: bool) -> dict[str, Any]:
    out = {k: v for k, v in body.items() if k not in CONNECTION_FIELDS}
    out["model"] = upstream_model
    messages = out.get("messages")
    if isinstance(messages, list):
        out["messages"] = [_clean_message(m) for m in messages]
    if stream:
        out["stream"] = True
    else:
        out.pop("stream", None)
        out.pop("stream_options", None)
    return out


def _clean_message(message: Any) -> Any:
    if isinstance(message, dict) and not CONNECTION_FIELDS.isdisjoint(message):
        return {k: v for k, v in message.items() if k not in CONNECTION_FIELDS}
    return message
