"""Parsing and sizing of an incoming chat completion request.

This module holds :class:`ChatRequest` (the parts of the request body the simulator acts on),
:func:`parse_chat_request`, which validates the body just enough to answer it and raises
:class:`~services.simulator.errors.OpenAIError` (400) in OpenAI's wording otherwise, and
:func:`estimate_prompt_tokens`, a cheap estimate rather than a tokenizer: for each message,
count the whitespace-separated words of its text (a string ``content``, or the ``text`` of each
``{"type": "text"}`` part of an array ``content``); the message costs
``max(1, ceil(words * 4 / 3))`` tokens, and ``prompt_tokens`` is the sum over messages.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.simulator.errors import OpenAIError


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """The parts of a chat completion request the simulator acts on."""

    model: str
    messages: list[Any]
    stream: bool
    include_usage: bool
    max_tokens: int | None
    tools: list[Any] | None
    tool_choice: Any


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, str):
        return "string"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, list):
        return "array"
    return "object"


def _invalid_type(param: str, expected: str, value: Any) -> OpenAIError:
    return OpenAIError(
        400,
        f"Invalid type for '{param}': expected {expected}, but got {_type_name(value)} instead.",
        param=param,
        code="invalid_type",
    )


def parse_chat_request(body: Any) -> ChatRequest:
    """Validate the request body enough to answer it; raises :class:`OpenAIError` (400)."""
    if not isinstance(body, dict):
        raise OpenAIError(
            400,
            f"Invalid body: expected a JSON object, but got {_type_name(body)} instead.",
            code="invalid_type",
        )
    model = body.get("model")
    if model is None:
        raise OpenAIError(400, "you must provide a model parameter", param="model")
    if not isinstance(model, str):
        raise _invalid_type("model", "a string", model)
    if not model:
        raise OpenAIError(400, "you must provide a model parameter", param="model")
    messages = body.get("messages")
    if messages is None:
        raise OpenAIError(
            400,
            "Missing required parameter: 'messages'.",
            param="messages",
            code="missing_required_parameter",
        )
    if not isinstance(messages, list):
        raise _invalid_type("messages", "an array", messages)
    if not messages:
        raise OpenAIError(
            400,
            "Invalid 'messages': empty array. Expected an array with minimum length 1, "
            "but got an empty array instead.",
            param="messages",
            code="empty_array",
        )

    max_tokens: int | None = None
    for param in ("max_completion_tokens", "max_tokens"):
        value = body.get(param)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise _invalid_type(param, "an integer", value)
        if value < 1:
            raise OpenAIError(
                400,
                f"Invalid '{param}': integer below minimum value. Expected a value >= 1, "
                f"but got {value} instead.",
                param=param,
                code="integer_below_min_value",
            )
        max_tokens = value
        break

    stream = body.get("stream") is True
    options = body.get("stream_options")
    include_usage = stream and isinstance(options, dict) and options.get("include_usage") is True
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise _invalid_type("tools", "an array", tools)
    return ChatRequest(
        model=model,
        messages=messages,
        stream=stream,
        include_usage=include_usage,
        max_tokens=max_tokens,
        tools=tools or None,
        tool_choice=body.get("tool_choice"),
    )


def estimate_prompt_tokens(messages: list[Any]) -> int:
    """``sum(max(1, ceil(words * 4 / 3)))`` over messages (see the module docstring)."""
    total = 0
    for message in messages:
        words = 0
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            words = len(content.split())
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict):
                    text = part.get("text")
                    if isinstance(text, str):
                        words += len(text.split())
        total += max(1, -(-words * 4 // 3))
    return total
