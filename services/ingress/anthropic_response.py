"""OpenAI answers → Anthropic Messages answers, for the Anthropic-compatible ingress.

:func:`to_message` turns a ``chat.completion`` into a ``message`` object;
:class:`StreamTranslator` turns ``chat.completion.chunk`` s into the Anthropic
event sequence (``message_start``, ``content_block_start``/``delta``/``stop``
for text and for each tool call with ``input_json_delta`` fragments,
``message_delta`` with ``stop_reason`` and usage, ``message_stop``); errors
become Anthropic error objects (:func:`error_object`).

Finish reasons: stop → end_turn, length → max_tokens, tool_calls → tool_use,
content_filter → refusal. Usage: ``input_tokens`` excludes cached tokens, which
are reported as ``cache_read_input_tokens``.
"""

from __future__ import annotations

from typing import Any

import orjson

from schemas.bus import ErrorInfo

STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


def error_object(info: ErrorInfo) -> dict[str, Any]:
    kind = ERROR_TYPES.get(info.status, "api_error")
    return {"type": "error", "error": {"type": kind, "message": info.message}}


def usage(raw: dict[str, Any] | None) -> dict[str, int]:
    raw = raw or {}
    details = raw.get("prompt_tokens_details") or {}
    cached = int(details.get("cached_tokens") or 0)
    return {
        "input_tokens": max(0, int(raw.get("prompt_tokens") or 0) - cached),
        "output_tokens": int(raw.get("completion_tokens") or 0),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
    }


def _arguments(text: str | None) -> dict[str, Any]:
    try:
        value = orjson.loads(text or "{}")
    except orjson.JSONDecodeError:
        return {"arguments": text}
    return value if isinstance(value, dict) else {"value": value}


def message_id(request_id: str) -> str:
    return "msg_" + request_id.removeprefix("req_")


def to_message(completion: dict[str, Any], model: str, request_id: str) -> dict[str, Any]:
    choice = (completion.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    if message.get("content"):
        content.append({"type": "text", "text": message["content"]})
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id"),
                "name": function.get("name"),
                "input": _arguments(function.get("arguments")),
            }
        )
    return {
        "id": message_id(request_id),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": STOP_REASONS.get(choice.get("finish_reason") or "stop", "end_turn"),
        "stop_sequence": None,
        "usage": usage(completion.get("usage")),
    }


def sse(event: str, data: dict[str, Any]) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class StreamTranslator:
    """Feed it OpenAI chunks; it returns the Anthropic SSE bytes for each."""

    def __init__(self, model: str, request_id: str) -> None:
        self._model = model
        self._id = message_id(request_id)
        self._started = False
        self._block = -1
        self._open: str | None = None  # "text" or "tool:<openai index>"
        self._stop_reason = "end_turn"
        self._usage: dict[str, Any] | None = None

    def _start(self) -> list[bytes]:
        if self._started:
            return []
        self._started = True
        message: dict[str, Any] = {
            "id": self._id,
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage(None),
        }
        return [sse("message_start", {"type": "message_start", "message": message})]

    def _close_block(self) -> list[bytes]:
        if self._open is None:
            return []
        self._open = None
        return [sse("content_block_stop", {"type": "content_block_stop", "index": self._block})]

    def _open_block(self, key: str, block: dict[str, Any]) -> list[bytes]:
        out = self._close_block()
        self._block += 1
        self._open = key
        out.append(
            sse(
                "content_block_start",
                {"type": "content_block_start", "index": self._block, "content_block": block},
            )
        )
        return out

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return sse(
            "content_block_delta",
            {"type": "content_block_delta", "index": self._block, "delta": delta},
        )

    def chunk(self, payload: bytes) -> bytes:
        data = orjson.loads(payload)
        out = self._start()
        if data.get("usage"):
            self._usage = data["usage"]
        for choice in data.get("choices") or []:
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if text:
                if self._open != "text":
                    out += self._open_block("text", {"type": "text", "text": ""})
                out.append(self._delta({"type": "text_delta", "text": text}))
            for call in delta.get("tool_calls") or []:
                key = f"tool:{call.get('index', 0)}"
                function = call.get("function") or {}
                if self._open != key:
                    block: dict[str, Any] = {
                        "type": "tool_use",
                        "id": call.get("id") or f"toolu_{self._block + 1}",
                        "name": function.get("name") or "",
                        "input": {},
                    }
                    out += self._open_block(key, block)
                if function.get("arguments"):
                    partial = {"type": "input_json_delta", "partial_json": function["arguments"]}
                    out.append(self._delta(partial))
            if choice.get("finish_reason"):
                self._stop_reason = STOP_REASONS.get(choice["finish_reason"], "end_turn")
        return b"".join(out)

    def done(self, final_usage: dict[str, Any] | None) -> bytes:
        out = self._start() + self._close_block()
        totals = usage(final_usage or self._usage)
        delta = {"stop_reason": self._stop_reason, "stop_sequence": None}
        out.append(sse("message_delta", {"type": "message_delta", "delta": delta, "usage": totals}))
        out.append(sse("message_stop", {"type": "message_stop"}))
        return b"".join(out)

    def error(self, info: ErrorInfo) -> bytes:
        return sse("error", error_object(info))
