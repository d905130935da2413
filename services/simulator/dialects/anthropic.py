"""Anthropic Messages, as the simulator speaks it.

* ``POST /v1/messages`` with an ``x-api-key`` header (or ``Authorization: Bearer``,
  which the official SDK sends; 401 ``authentication_error`` without either) and an
  ``anthropic-version`` header (400 without it).
* Body: ``model``, ``messages`` (non-empty; roles ``user``/``assistant``, content a
  string or blocks: ``text``, ``image`` with a ``base64`` or ``url`` source,
  ``tool_use``, ``tool_result`` with string or block content) and ``max_tokens``
  (an integer >= 1) are required; ``system`` (a string or text blocks), ``tools``,
  ``tool_choice`` (``auto``/``any``/``tool``/``none``), ``stop_sequences``,
  ``temperature`` (0..1) and ``stream`` are understood. Each ``tool_use`` must be
  answered by a ``tool_result`` in the next message and each ``tool_result`` must
  answer a ``tool_use`` of the previous one, and text blocks must be non-empty,
  as the API demands. Messages are validated in Anthropic's wording
  (``max_tokens: Field required``).
* Answers, streams: :mod:`services.simulator.dialects.anthropic_stream`.
* Errors: ``{"type": "error", "error": {"type", "message"}, "request_id"}`` with
  a ``request-id`` header; the ``unavailable`` and ``overloaded`` kinds are both
  Anthropic's ``529 overloaded_error`` (the API documents no 503).
* No embeddings: Anthropic has no embeddings API.
"""

from __future__ import annotations

import re
from random import getrandbits
from typing import Any, Final

import orjson

from services.simulator.dialect import (
    Answer,
    Call,
    EmbedRequest,
    ErrorKind,
    Item,
    Route,
    SimError,
    SimRequest,
    SimTool,
)
from services.simulator.dialects.anthropic_stream import AnthropicStream, message
from services.simulator.dialects.openai import format_seconds
from services.simulator.engine import call_item

ERRORS: Final[dict[ErrorKind, tuple[int, str]]] = {
    "invalid_request": (400, "invalid_request_error"),
    "authentication": (401, "authentication_error"),
    "permission": (403, "permission_error"),
    "not_found": (404, "not_found_error"),
    "request_too_large": (413, "request_too_large"),
    "rate_limit": (429, "rate_limit_error"),
    "api_error": (500, "api_error"),
    "unavailable": (529, "overloaded_error"),
    "overloaded": (529, "overloaded_error"),
}
_MEDIA_TYPES: Final = ("image/jpeg", "image/png", "image/gif", "image/webp")
_IGNORED_BLOCKS: Final = frozenset({"document", "thinking", "redacted_thinking", "search_result"})
_CHOICES: Final = {"auto": "auto", "any": "required", "none": "none"}


def _bad(message: str) -> SimError:
    return SimError(400, message)


def _text_blocks(value: Any, where: str) -> list[str]:
    """A string, or a list of ``text`` blocks, as its texts."""
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise _bad(f"{where}: Input should be a valid string or a list of content blocks")
    texts: list[str] = []
    for i, block in enumerate(value):
        if not isinstance(block, dict) or block.get("type") != "text":
            raise _bad(f"{where}.{i}: Input should be a text block")
        text = block.get("text")
        if not isinstance(text, str):
            raise _bad(f"{where}.{i}.text: Field required")
        if not text:
            raise _bad(f"{where}: text content blocks must be non-empty")
        texts.append(text)
    return texts


def _image_item(block: dict[str, Any], where: str) -> Item:
    source = block.get("source")
    if not isinstance(source, dict):
        raise _bad(f"{where}.source: Field required")
    kind = source.get("type")
    if kind == "base64":
        media_type = source.get("media_type")
        if media_type not in _MEDIA_TYPES:
            allowed = ", ".join(f"'{m}'" for m in _MEDIA_TYPES)
            raise _bad(f"{where}.source.base64.media_type: Input should be {allowed}")
        if not isinstance(source.get("data"), str) or not source["data"]:
            raise _bad(f"{where}.source.base64.data: Field required")
        return Item("image", str(media_type))
    if kind == "url":
        if not isinstance(source.get("url"), str) or not source["url"]:
            raise _bad(f"{where}.source.url.url: Field required")
        return Item("image", "url")
    raise _bad(f"{where}.source: Input tag '{kind}' does not match the expected tags")


def _result_items(block: dict[str, Any], where: str) -> list[Item]:
    content = block.get("content", "")
    if isinstance(content, str):
        return [Item("result", content)]
    if not isinstance(content, list):
        raise _bad(f"{where}.content: Input should be a valid string or list")
    texts: list[str] = []
    images: list[Item] = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "image":
            images.append(_image_item(part, f"{where}.content.{j}"))
        elif kind not in _IGNORED_BLOCKS:
            raise _bad(f"{where}.content.{j}: Input tag '{kind}' does not match the expected tags")
    return [Item("result", "".join(texts)), *images]


def _block_items(block: Any, role: str, where: str) -> tuple[list[Item], str | None, str | None]:
    """The items of one content block, and the tool_use id it opens or the one it answers."""
    if not isinstance(block, dict):
        raise _bad(f"{where}: Input should be a valid dictionary")
    kind = block.get("type")
    if kind == "text":
        text = block.get("text")
        if not isinstance(text, str):
            raise _bad(f"{where}.text: Field required")
        if not text:
            raise _bad("messages: text content blocks must be non-empty")
        return [Item("user" if role == "user" else "assistant", text)], None, None
    if kind == "image":
        return [_image_item(block, where)], None, None
    if kind == "tool_use":
        name, call_id = block.get("name"), block.get("id")
        if not isinstance(name, str) or not isinstance(call_id, str):
            raise _bad(f"{where}.tool_use.id: Field required")
        if not isinstance(block.get("input"), dict):
            raise _bad(f"{where}.tool_use.input: Input should be a valid dictionary")
        return [call_item(name, block["input"])], call_id, None
    if kind == "tool_result":
        answered = block.get("tool_use_id")
        if not isinstance(answered, str):
            raise _bad(f"{where}.tool_result.tool_use_id: Field required")
        return _result_items(block, where), None, answered
    if kind in _IGNORED_BLOCKS:
        return [], None, None
    raise _bad(f"{where}: Input tag '{kind}' found using 'type' does not match the expected tags")


def _messages(messages: Any) -> list[Item]:
    if messages is None:
        raise _bad("messages: Field required")
    if not isinstance(messages, list):
        raise _bad("messages: Input should be a valid list")
    if not messages:
        raise _bad("messages: at least one message is required")
    items: list[Item] = []
    open_calls: list[str] = []  # tool_use ids of the previous message
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise _bad(f"messages.{i}: Input should be a valid dictionary")
        role = msg.get("role")
        if role not in ("user", "assistant"):
            raise _bad(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        content = msg.get("content")
        if content is None:
            raise _bad(f"messages.{i}.content: Field required")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not isinstance(blocks, list):
            raise _bad(f"messages.{i}.content: Input should be a valid list")
        if not blocks or blocks == [{"type": "text", "text": ""}]:
            if i < len(messages) - 1 or role != "assistant":
                raise _bad(
                    f"messages.{i}: all messages must have non-empty content except for "
                    "the optional final assistant message"
                )
            continue
        opened: list[str] = []
        for j, block in enumerate(blocks):
            found, call_id, answered = _block_items(block, role, f"messages.{i}.content.{j}")
            items.extend(found)
            if call_id is not None:
                opened.append(call_id)
            if answered is not None:
                if answered not in open_calls:
                    raise _bad(
                        f"messages.{i}.content.{j}: unexpected `tool_use_id` found in "
                        f"`tool_result` blocks: {answered}. Each `tool_result` block must have "
                        "a corresponding `tool_use` block in the previous message."
                    )
                open_calls.remove(answered)
        if open_calls:
            raise _bad(
                f"messages.{i - 1}: `tool_use` ids were found without `tool_result` blocks "
                f"immediately after: {', '.join(open_calls)}. Each `tool_use` block must have "
                "a corresponding `tool_result` block in the next message."
            )
        open_calls = opened
    return items


def _tools(body: dict[str, Any]) -> tuple[SimTool, ...]:
    tools = body.get("tools")
    if tools is None:
        return ()
    if not isinstance(tools, list):
        raise _bad("tools: Input should be a valid list")
    parsed: list[SimTool] = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            raise _bad(f"tools.{i}.name: Field required")
        if tool.get("type") not in (None, "custom"):
            continue  # a server tool (web search and the like): never called here
        schema = tool.get("input_schema")
        if not isinstance(schema, dict):
            raise _bad(f"tools.{i}.custom.input_schema: Field required")
        parsed.append(SimTool(tool["name"], schema))
    return tuple(parsed)


def _tool_choice(body: dict[str, Any]) -> str | None:
    choice = body.get("tool_choice")
    if choice is None:
        return None
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind == "tool":
        name = choice.get("name") if isinstance(choice, dict) else None
        if not isinstance(name, str):
            raise _bad("tool_choice.tool.name: Field required")
        return name
    if kind not in _CHOICES:
        raise _bad(
            "tool_choice: Input tag found using 'type' does not match any of the expected "
            "tags: 'auto', 'any', 'tool', 'none'"
        )
    return _CHOICES[str(kind)]


def _max_tokens(body: dict[str, Any]) -> int:
    value = body.get("max_tokens")
    if value is None:
        raise _bad("max_tokens: Field required")
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad("max_tokens: Input should be a valid integer")
    if value < 1:
        raise _bad("max_tokens: Input should be greater than or equal to 1")
    return value


def _check_options(body: dict[str, Any]) -> tuple[str, ...]:
    stops = body.get("stop_sequences")
    if stops is not None and (
        not isinstance(stops, list) or not all(isinstance(s, str) for s in stops)
    ):
        raise _bad("stop_sequences: Input should be a valid list of strings")
    temperature = body.get("temperature")
    if temperature is not None:
        if isinstance(temperature, bool) or not isinstance(temperature, int | float):
            raise _bad("temperature: Input should be a valid number")
        if not 0 <= temperature <= 1:
            raise _bad("temperature: range: 0..1")
    if body.get("stream") is not None and not isinstance(body["stream"], bool):
        raise _bad("stream: Input should be a valid boolean")
    return tuple(stops or ())


def parse_messages(call: Call, body: Any) -> SimRequest:
    """Validate one Messages request as the API would and collect its conversation."""
    if not call.headers.get("x-api-key") and not call.headers.get("authorization"):
        raise SimError(401, "x-api-key header is required", "authentication")
    if not call.headers.get("anthropic-version"):
        raise _bad("anthropic-version: header is required")
    if not isinstance(body, dict):
        raise _bad("Input should be a valid dictionary")
    model = body.get("model")
    if model is None:
        raise _bad("model: Field required")
    if not isinstance(model, str) or not model:
        raise _bad("model: Input should be a valid string")
    max_tokens = _max_tokens(body)
    system = body.get("system")
    items = [Item("system", t) for t in _text_blocks(system, "system")] if system else []
    items.extend(_messages(body.get("messages")))
    stops = _check_options(body)
    return SimRequest(
        model=model,
        stream=body.get("stream") is True,
        max_tokens=max_tokens,
        stop=stops,
        tools=_tools(body),
        tool_choice=_tool_choice(body),
        items=tuple(items),
        header_behaviour=call.headers.get("x-sim-behavior") or call.headers.get("x-sim-behaviour"),
    )


def new_request_id() -> str:
    return f"req_011C{getrandbits(100):025x}"


def error_response(error: SimError) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    status, kind = ERRORS[error.kind]
    if error.kind == "invalid_request" and 400 <= error.status < 500:
        status = error.status
    request_id = new_request_id()
    headers = [(b"request-id", request_id.encode())]
    if error.retry_after is not None:
        headers.append((b"retry-after", format_seconds(error.retry_after).encode()))
    if kind in ("rate_limit_error", "overloaded_error", "api_error"):
        headers.append((b"x-should-retry", b"true"))
    body = {
        "type": "error",
        "error": {"type": kind, "message": error.message},
        "request_id": request_id,
    }
    return status, headers, orjson.dumps(body)


class AnthropicDialect:
    name = "anthropic"
    embeds = False
    routes: tuple[Route, ...] = (Route("POST", re.compile(r"/v1/messages"), "chat"),)

    def parse_chat(self, call: Call, body: Any) -> SimRequest:
        return parse_messages(call, body)

    def complete(self, call: Call, request: SimRequest, answer: Answer) -> bytes:
        return message(answer)

    def stream_encoder(self, call: Call, request: SimRequest, answer: Answer) -> AnthropicStream:
        return AnthropicStream(answer)

    def error(self, error: SimError) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        return error_response(error)

    def parse_embed(self, call: Call, body: Any) -> EmbedRequest:
        raise SimError(404, "Anthropic has no embeddings API.", "not_found")

    def embed_response(
        self, call: Call, request: EmbedRequest, vectors: list[list[float]], tokens: int
    ) -> bytes:
        raise SimError(404, "Anthropic has no embeddings API.", "not_found")
