"""Small parsing helpers every adapter needs: an upstream JSON object, and the
text of an OpenAI message ``content`` (a string or an array of text parts)."""

from __future__ import annotations

from typing import Any

import orjson

from services.runtime.errors import InvalidRequest, UpstreamProtocolError


def parse_object(dep: str, raw: bytes | str) -> dict[str, Any]:
    """``raw`` as a JSON object; anything else is the deployment's protocol error."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise UpstreamProtocolError(f"deployment {dep} sent a body that is not JSON") from None
    if not isinstance(data, dict):
        raise UpstreamProtocolError(f"deployment {dep} sent JSON that is not an object")
    return data


def text_of(content: Any, param: str) -> str:
    """The text of a message ``content``; parts other than text (or refusal) are a 400
    naming ``param[j]``, for roles whose content can only be text."""
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list):
        raise InvalidRequest(f"'{param}' must be a string or an array of parts", param=param)
    texts = []
    for j, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") not in ("text", "refusal"):
            raise InvalidRequest(
                f"'{param}[{j}]' must be a text part for this role", param=f"{param}[{j}]"
            )
        texts.append(str(part.get("text") or part.get("refusal") or ""))
    return "\n".join(texts)
