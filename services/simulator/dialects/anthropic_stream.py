"""Anthropic Messages answers as the simulator renders them: whole and streamed.

* :func:`message` is a whole ``message`` object: ``id`` ``msg_...``, ``type``
  ``message``, ``role`` ``assistant``, ``content`` blocks (one ``text`` block, or
  one ``tool_use`` block with the parsed ``input``), ``model``, ``stop_reason``,
  ``stop_sequence`` and ``usage`` (``input_tokens`` excludes the cached tokens,
  which are ``cache_read_input_tokens``).
* :class:`AnthropicStream` frames each event as ``event: <type>\\ndata: <json>\\n\\n``
  in the order Anthropic sends them: ``message_start`` (the message with empty
  content, ``stop_reason: null`` and the input usage), ``content_block_start``,
  one ``ping``, a ``content_block_delta`` per token (``text_delta``) or argument
  fragment (``input_json_delta``, the first one empty as the API sends it),
  ``content_block_stop``, ``message_delta`` (``stop_reason``, ``stop_sequence``
  and ``usage.output_tokens``), ``message_stop``.
"""

from __future__ import annotations

import string
from random import choices
from typing import Any, Final

import orjson

from services.simulator.dialect import Answer, SimToolCall

_SSE: Final = b"text/event-stream; charset=utf-8"
_ID_CHARS: Final = string.ascii_letters + string.digits
STOP_REASONS: Final = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "stop_sequence": "stop_sequence",
}
SERVICE_TIER: Final = "standard"


def _suffix() -> str:
    return "".join(choices(_ID_CHARS, k=22))


def new_message_id() -> str:
    return f"msg_01{_suffix()}"


def tool_use_id(call: SimToolCall) -> str:
    """The engine's call id in Anthropic's ``toolu_`` form (stable for one call)."""
    return "toolu_01" + call.id.removeprefix("call_")


def usage(answer: Answer) -> dict[str, Any]:
    return {
        "input_tokens": answer.prompt_tokens - answer.cached_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": answer.cached_tokens,
        "output_tokens": answer.completion_tokens,
        "service_tier": SERVICE_TIER,
    }


def _tool_use(call: SimToolCall, with_input: bool) -> dict[str, Any]:
    return {
        "type": "tool_use",
        "id": tool_use_id(call),
        "name": call.name,
        "input": orjson.loads(call.arguments or "{}") if with_input else {},
    }


def message(answer: Answer) -> bytes:
    """The whole (non-streamed) ``message`` object."""
    content: list[dict[str, Any]] = []
    if answer.tool_call is not None:
        content.append(_tool_use(answer.tool_call, with_input=True))
    elif answer.text:
        content.append({"type": "text", "text": answer.text})
    return orjson.dumps(
        {
            "id": new_message_id(),
            "type": "message",
            "role": "assistant",
            "model": answer.model,
            "content": content,
            "stop_reason": STOP_REASONS[answer.finish],
            "stop_sequence": answer.stop_sequence,
            "usage": usage(answer),
        }
    )


def sse(event: str, data: dict[str, Any]) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


_EMPTY_TEXT: Final = {"type": "text", "text": ""}
_PING: Final = sse("ping", {"type": "ping"})
_TEXT_PREFIX: Final = (
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
    b'"delta":{"type":"text_delta","text":'
)
_JSON_PREFIX: Final = (
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
    b'"delta":{"type":"input_json_delta","partial_json":'
)


class AnthropicStream:
    """The SSE events of one streamed message (one content block, index 0)."""

    content_type = _SSE

    def __init__(self, answer: Answer) -> None:
        self._answer = answer
        self._id = new_message_id()

    def start(self) -> bytes:
        answer = self._answer
        start_usage = usage(answer)
        start_usage["output_tokens"] = 1
        started: dict[str, Any] = {
            "id": self._id,
            "type": "message",
            "role": "assistant",
            "model": answer.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": start_usage,
        }
        out = sse("message_start", {"type": "message_start", "message": started})
        if answer.tool_call is not None:
            return out  # the tool_use block starts in tool_start
        block = {"type": "content_block_start", "index": 0, "content_block": _EMPTY_TEXT}
        return out + sse("content_block_start", block) + _PING

    def text(self, piece: str) -> bytes:
        return _TEXT_PREFIX + orjson.dumps(piece) + b"}}\n\n"

    def tool_start(self, call: SimToolCall) -> bytes:
        block = {
            "type": "content_block_start",
            "index": 0,
            "content_block": _tool_use(call, with_input=False),
        }
        return sse("content_block_start", block) + _PING + self.tool_arguments("")

    def tool_arguments(self, fragment: str) -> bytes:
        return _JSON_PREFIX + orjson.dumps(fragment) + b"}}\n\n"

    def finish(self) -> bytes:
        answer = self._answer
        delta = {
            "type": "message_delta",
            "delta": {
                "stop_reason": STOP_REASONS[answer.finish],
                "stop_sequence": answer.stop_sequence,
            },
            "usage": {"output_tokens": answer.completion_tokens},
        }
        return b"".join(
            (
                sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
                sse("message_delta", delta),
                sse("message_stop", {"type": "message_stop"}),
            )
        )

    def malformed(self) -> bytes:
        return b"event: content_block_delta\ndata: {not json\n\n"
