"""Ollama's native API, as the simulator speaks it.

* ``POST /api/chat``: ``{model, messages, tools?, format?, options?, stream?, keep_alive?}``;
  no auth. ``stream`` defaults to true when absent (or null), as Ollama does.
  Messages carry a string ``content``, base64 ``images`` (the media type is sniffed
  from the bytes for ``echo``), ``tool_calls`` with object ``arguments``, and tool
  results as ``{"role": "tool", "content", "tool_name"}``. ``options.num_predict``
  caps the output (``done_reason`` ``length``), ``options.stop`` cuts it
  (``done_reason`` ``stop``, as Ollama reports stop sequences). Ollama has no
  ``tool_choice``: tool calls happen only when the behaviour forces one (``tool_call=1``).
* Non-stream: one JSON object ``{model, created_at, message, done_reason, done: true,
  total_duration, load_duration, prompt_eval_count, prompt_eval_duration, eval_count,
  eval_duration}``; ``created_at`` is RFC 3339 with nanoseconds (trailing zeros
  trimmed, as Go prints it), durations are nanoseconds, zero metrics are omitted.
* Stream (``application/x-ndjson``): one line per token ``{model, created_at,
  message: {role, content}, done: false}``; a tool call arrives whole in one line
  (``message.tool_calls``, Ollama does not stream arguments); a last line with
  ``done: true``, ``done_reason`` and the metrics.
* ``POST /api/embed``: ``{model, input: str | [str], truncate?, dimensions?}`` ->
  ``{model, embeddings, total_duration, load_duration, prompt_eval_count}``.
* Errors: ``{"error": "<message>"}``; a server that is busy answers 503 ``server busy``.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
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
    SimToolCall,
)
from services.simulator.dialects.openai import format_seconds
from services.simulator.engine import call_item

_NDJSON: Final = b"application/x-ndjson"
BUSY: Final = "server busy, please try again.  maximum pending requests exceeded"
_STATUS: Final[dict[ErrorKind, int]] = {
    "authentication": 401,
    "permission": 403,
    "not_found": 404,
    "request_too_large": 413,
    "rate_limit": 429,
    "api_error": 500,
    "unavailable": 503,
    "overloaded": 503,
}
_DONE_REASON: Final = {"stop": "stop", "stop_sequence": "stop", "length": "length"}
_ROLES: Final = ("system", "user", "assistant", "tool")
_MAGIC: Final = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


def created_at(ns: int | None = None) -> str:
    """RFC 3339 UTC with up to nine fraction digits, trailing zeros trimmed (Go's RFC3339Nano)."""
    ns = time.time_ns() if ns is None else ns
    seconds, fraction = divmod(ns, 1_000_000_000)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    digits = f"{fraction:09d}".rstrip("0")
    return f"{stamp}.{digits}Z" if digits else f"{stamp}Z"


def _go_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, str):
        return "string"
    if isinstance(value, int | float):
        return "number"
    return "array" if isinstance(value, list) else "object"


def _unmarshal(value: Any, field: str, go_type: str) -> SimError:
    """Go's encoding/json wording for a field of the wrong type."""
    return SimError(
        400,
        f"json: cannot unmarshal {_go_type(value)} into Go struct field {field} of type {go_type}",
    )


def image_media_type(data: Any, index: int) -> str:
    """The media type of one base64 image, sniffed from its first bytes."""
    if not isinstance(data, str):
        raise _unmarshal(data, f"Message.messages.images[{index}]", "api.ImageData")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        bad = next((i for i, c in enumerate(data) if not (c.isalnum() or c in "+/=")), 0)
        raise SimError(400, f"illegal base64 data at input byte {bad}") from None
    for magic, media_type in _MAGIC:
        if raw.startswith(magic):
            return media_type
    if raw[:4] == b"RIFF" and raw[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"


def _message_items(message: Any, index: int) -> list[Item]:
    if not isinstance(message, dict):
        raise _unmarshal(message, "ChatRequest.messages", "api.Message")
    role = message.get("role")
    if role not in _ROLES:
        raise SimError(400, f"invalid role {role!r} in messages[{index}]: must be one of {_ROLES}")
    content = message.get("content", "")
    if content is None:
        content = ""
    if not isinstance(content, str):
        raise _unmarshal(content, "Message.messages.content", "string")
    if role == "tool":
        return [Item("result", content)]
    images = message.get("images") or []
    if not isinstance(images, list):
        raise _unmarshal(images, "Message.messages.images", "[]api.ImageData")
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list):
        raise _unmarshal(calls, "Message.messages.tool_calls", "[]api.ToolCall")
    bare = role != "assistant" and not images
    items = [Item(role, content)] if content or bare else []
    items.extend(Item("image", image_media_type(data, i)) for i, data in enumerate(images))
    for call in calls:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            raise _unmarshal(function, "ToolCall.messages.tool_calls.function", "api.ToolCall")
        arguments = function.get("arguments", {})
        if not isinstance(arguments, dict):
            raise _unmarshal(
                arguments,
                "ToolCallFunction.messages.tool_calls.function.arguments",
                "api.ToolCallFunctionArguments",
            )
        items.append(call_item(str(function.get("name", "")), arguments))
    return items


def _options(body: dict[str, Any]) -> tuple[int | None, tuple[str, ...]]:
    options = body.get("options") or {}
    if not isinstance(options, dict):
        raise _unmarshal(options, "ChatRequest.options", "map[string]interface {}")
    predict = options.get("num_predict")
    if predict is not None and (isinstance(predict, bool) or not isinstance(predict, int | float)):
        raise SimError(400, 'option "num_predict" must be of type integer')
    stop = options.get("stop")
    if stop is not None and (
        not isinstance(stop, list) or not all(isinstance(s, str) for s in stop)
    ):
        raise SimError(400, 'option "stop" must be of an array of strings')
    # num_predict -1 is "until done", -2 "fill the context": no cap either way.
    max_tokens = int(predict) if predict is not None and predict > 0 else None
    return max_tokens, tuple(stop or ())


def _tools(body: dict[str, Any]) -> tuple[SimTool, ...]:
    tools = body.get("tools") or []
    if not isinstance(tools, list):
        raise _unmarshal(tools, "ChatRequest.tools", "api.Tools")
    parsed = []
    for tool in tools:
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            parsed.append(SimTool(function["name"], function.get("parameters")))
    return tuple(parsed)


def _model(body: Any) -> str:
    if not isinstance(body, dict):
        raise SimError(400, f"json: cannot unmarshal {_go_type(body)} into Go value")
    model = body.get("model")
    if model is None or model == "":
        raise SimError(400, "model is required")
    if not isinstance(model, str):
        raise _unmarshal(model, "ChatRequest.model", "string")
    return model


def parse_ollama_chat(call: Call, body: Any) -> SimRequest:
    model = _model(body)
    messages = body.get("messages")
    if messages is None:
        messages = []
    if not isinstance(messages, list):
        raise _unmarshal(messages, "ChatRequest.messages", "[]api.Message")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _unmarshal(stream, "ChatRequest.stream", "bool")
    max_tokens, stop = _options(body)
    return SimRequest(
        model=model,
        stream=stream is not False,
        include_usage=True,
        max_tokens=max_tokens,
        stop=stop,
        tools=_tools(body),
        tool_choice=None,
        items=tuple(item for i, m in enumerate(messages) for item in _message_items(m, i)),
        header_behaviour=call.headers.get("x-sim-behavior") or call.headers.get("x-sim-behaviour"),
    )


def _metrics(prompt_tokens: int, eval_tokens: int) -> dict[str, int]:
    """Plausible timings (ns) for the token counts; zero values are omitted, as Ollama does."""
    load = 2_315_000
    prompt_ns = 120_000 * prompt_tokens
    eval_ns = 9_500_000 * eval_tokens
    values = {
        "total_duration": load + prompt_ns + eval_ns + 410_000,
        "load_duration": load,
        "prompt_eval_count": prompt_tokens,
        "prompt_eval_duration": prompt_ns,
        "eval_count": eval_tokens,
        "eval_duration": eval_ns,
    }
    return {k: v for k, v in values.items() if v}


def _tool_calls(call: SimToolCall) -> list[dict[str, Any]]:
    return [
        {
            "id": call.id,
            "function": {"index": 0, "name": call.name, "arguments": orjson.loads(call.arguments)},
        }
    ]


def completion(answer: Answer) -> bytes:
    message: dict[str, Any] = {"role": "assistant", "content": answer.text}
    if answer.tool_call is not None:
        message["tool_calls"] = _tool_calls(answer.tool_call)
    return orjson.dumps(
        {
            "model": answer.model,
            "created_at": created_at(),
            "message": message,
            "done_reason": _DONE_REASON.get(answer.finish, "stop"),
            "done": True,
            **_metrics(answer.prompt_tokens, answer.completion_tokens),
        }
    )


class OllamaStream:
    """The NDJSON lines of one streamed chat answer."""

    content_type = _NDJSON

    def __init__(self, answer: Answer) -> None:
        self._answer = answer
        self._prefix = b'{"model":' + orjson.dumps(answer.model) + b',"created_at":"'

    def _line(self, message: dict[str, Any], tail: bytes = b',"done":false}') -> bytes:
        return b"".join(
            (
                self._prefix,
                created_at().encode(),
                b'","message":',
                orjson.dumps(message),
                tail,
                b"\n",
            )
        )

    def start(self) -> bytes:
        return b""

    def text(self, piece: str) -> bytes:
        return self._line({"role": "assistant", "content": piece})

    def tool_start(self, call: SimToolCall) -> bytes:
        return self._line({"role": "assistant", "content": "", "tool_calls": _tool_calls(call)})

    def tool_arguments(self, fragment: str) -> bytes:
        return b""  # the whole call went out with tool_start

    def finish(self) -> bytes:
        answer = self._answer
        tail = orjson.dumps(
            {
                "done_reason": _DONE_REASON.get(answer.finish, "stop"),
                "done": True,
                **_metrics(answer.prompt_tokens, answer.completion_tokens),
            }
        )
        return self._line({"role": "assistant", "content": ""}, b"," + tail[1:])

    def malformed(self) -> bytes:
        return self._prefix + b'2024-01-01T00:00:00Z","message":{"role":"assis\n'


def parse_ollama_embed(call: Call, body: Any) -> EmbedRequest:
    model = _model(body)
    raw = body.get("input")
    if raw is None:
        inputs: list[Any] = []
    elif isinstance(raw, str):
        inputs = [raw]
    else:
        inputs = raw
    if not isinstance(inputs, list) or not all(isinstance(i, str) for i in inputs):
        raise SimError(400, "invalid input type")
    dimensions = body.get("dimensions")
    if dimensions is not None and (
        isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions < 1
    ):
        raise SimError(400, "dimensions must be a positive integer")
    truncate = body.get("truncate")
    if truncate is not None and not isinstance(truncate, bool):
        raise _unmarshal(truncate, "EmbedRequest.truncate", "bool")
    return EmbedRequest(
        model=model,
        inputs=tuple(inputs),
        dimensions=dimensions,
        header_behaviour=call.headers.get("x-sim-behavior") or call.headers.get("x-sim-behaviour"),
    )


def embeddings_body(request: EmbedRequest, vectors: list[list[float]], tokens: int) -> bytes:
    metrics = _metrics(tokens, 0)
    return orjson.dumps(
        {
            "model": request.model.partition("?")[0],
            "embeddings": vectors,
            "total_duration": metrics.get("total_duration", 0),
            "load_duration": metrics["load_duration"],
            **({"prompt_eval_count": tokens} if tokens else {}),
        }
    )


class OllamaDialect:
    name = "ollama"
    embeds = True
    routes: tuple[Route, ...] = (
        Route("POST", re.compile(r"/api/chat"), "chat"),
        Route("POST", re.compile(r"/api/embed"), "embed"),
    )

    def parse_chat(self, call: Call, body: Any) -> SimRequest:
        return parse_ollama_chat(call, body)

    def complete(self, call: Call, request: SimRequest, answer: Answer) -> bytes:
        return completion(answer)

    def stream_encoder(self, call: Call, request: SimRequest, answer: Answer) -> OllamaStream:
        return OllamaStream(answer)

    def error(self, error: SimError) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        status = error.status if error.kind == "invalid_request" else _STATUS[error.kind]
        message = BUSY if error.kind in ("unavailable", "overloaded") else error.message
        headers: list[tuple[bytes, bytes]] = []
        if error.retry_after is not None:
            headers.append((b"retry-after", format_seconds(error.retry_after).encode()))
        return status, headers, orjson.dumps({"error": message})

    def parse_embed(self, call: Call, body: Any) -> EmbedRequest:
        return parse_ollama_embed(call, body)

    def embed_response(
        self, call: Call, request: EmbedRequest, vectors: list[list[float]], tokens: int
    ) -> bytes:
        return embeddings_body(request, vectors, tokens)
