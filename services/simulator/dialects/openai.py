"""OpenAI Chat Completions and Embeddings, as the simulator speaks them.

* ``POST /v1/chat/completions`` (also ``/chat/completions``); no auth required, so
  the first run works without keys.
* Non-stream: one ``chat.completion`` object.
* Stream (``text/event-stream``, frames ``data: <json>\\n\\n``): a first chunk whose
  delta is ``{"role": "assistant", "content": "", "refusal": null}``, one chunk per
  token, a final chunk with an empty delta and ``finish_reason``, then, only when
  ``stream_options.include_usage`` is true, a usage chunk with ``choices: []`` (and
  every earlier chunk carries ``"usage": null``), then ``data: [DONE]``.
* Tool calls: in streams the first chunk carries the call's
  ``index``/``id``/``type``/``function.name`` with ``arguments: ""``; the arguments
  follow in fragments; ``finish_reason`` is ``tool_calls``.
* ``POST /v1/embeddings``: ``input`` a string or a list of strings; ``encoding_format``
  ``float`` (default) or ``base64`` (little-endian float32, what the SDK asks for).
* Errors: ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import base64
import re
import struct
import time
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
    SimToolCall,
)
from services.simulator.engine import call_item

SYSTEM_FINGERPRINT: Final = "fp_igwsim0001"
SERVICE_TIER: Final = "default"
DONE: Final = b"data: [DONE]\n\n"
_SSE: Final = b"text/event-stream; charset=utf-8"

_ERRORS: Final[dict[ErrorKind, tuple[int, str, str | None]]] = {
    "invalid_request": (400, "invalid_request_error", None),
    "authentication": (401, "invalid_request_error", "invalid_api_key"),
    "permission": (403, "invalid_request_error", "unsupported_country_region_territory"),
    "not_found": (404, "invalid_request_error", "model_not_found"),
    "request_too_large": (413, "invalid_request_error", "request_too_large"),
    "rate_limit": (429, "requests", "rate_limit_exceeded"),
    "api_error": (500, "server_error", None),
    "unavailable": (503, "service_unavailable_error", "server_is_overloaded"),
    "overloaded": (503, "service_unavailable_error", "server_is_overloaded"),
}
_FINISH: Final = {"stop": "stop", "stop_sequence": "stop", "length": "length"}


def new_completion_id() -> str:
    return f"chatcmpl-{getrandbits(120):030x}"


def error_body(message: str, type_: str, param: str | None, code: str | None) -> bytes:
    return orjson.dumps(
        {"error": {"message": message, "type": type_, "param": param, "code": code}}
    )


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, str):
        return "string"
    if isinstance(value, int | float):
        return "number"
    return "array" if isinstance(value, list) else "object"


def invalid_type(param: str, expected: str, value: Any) -> SimError:
    return SimError(
        400,
        f"Invalid type for '{param}': expected {expected}, but got {_type_name(value)} instead.",
        param=param,
        code="invalid_type",
    )


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"
        )
    return ""


def _image_item(part: dict[str, Any]) -> Item:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str) or not url:
        raise SimError(400, "Missing required parameter: 'image_url.url'.", param="image_url.url")
    if url.startswith("data:"):
        return Item("image", url[5:].split(";", 1)[0])
    return Item("image", "url")


def _message_items(message: Any, index: int) -> list[Item]:
    if not isinstance(message, dict):
        raise invalid_type(f"messages[{index}]", "an object", message)
    role = message.get("role")
    content = message.get("content")
    if role in ("system", "developer"):
        return [Item("system", _text_of(content))]
    if role == "tool":
        return [Item("result", _text_of(content))]
    if role == "user":
        if isinstance(content, list):
            items: list[Item] = []
            for part in content:
                if isinstance(part, dict) and part.get("type") == "image_url":
                    items.append(_image_item(part))
                elif isinstance(part, dict) and part.get("type") == "text":
                    items.append(Item("user", str(part.get("text", ""))))
            return items
        return [Item("user", _text_of(content))]
    if role == "assistant":
        items = [Item("assistant", _text_of(content))] if _text_of(content) else []
        for call in message.get("tool_calls") or []:
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                items.append(call_item(str(function.get("name")), function.get("arguments", "")))
        return items
    raise SimError(
        400,
        f"Invalid value: '{role}'. Supported values are: 'system', 'assistant', 'user', "
        "'tool', and 'developer'.",
        param=f"messages[{index}].role",
        code="invalid_value",
    )


def _max_tokens(body: dict[str, Any]) -> int | None:
    for param in ("max_completion_tokens", "max_tokens"):
        value = body.get(param)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise invalid_type(param, "an integer", value)
        if value < 1:
            raise SimError(
                400,
                f"Invalid '{param}': integer below minimum value. Expected a value >= 1, "
                f"but got {value} instead.",
                param=param,
                code="integer_below_min_value",
            )
        return value
    return None


def _tools(body: dict[str, Any]) -> tuple[tuple[SimTool, ...], str | None]:
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise invalid_type("tools", "an array", tools)
    parsed = []
    for tool in tools or []:
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            parsed.append(SimTool(function["name"], function.get("parameters")))
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(name, str):
            raise SimError(
                400,
                "Missing required parameter: 'tool_choice.function.name'.",
                param="tool_choice.function.name",
                code="missing_required_parameter",
            )
        return tuple(parsed), name
    return tuple(parsed), choice if isinstance(choice, str) else None


def parse_openai_chat(call: Call, body: Any) -> SimRequest:
    if not isinstance(body, dict):
        raise SimError(400, f"Invalid body: expected a JSON object, but got {_type_name(body)}.")
    model = body.get("model")
    if model is None or model == "":
        raise SimError(400, "you must provide a model parameter", param="model")
    if not isinstance(model, str):
        raise invalid_type("model", "a string", model)
    messages = body.get("messages")
    if messages is None:
        raise SimError(
            400,
            "Missing required parameter: 'messages'.",
            param="messages",
            code="missing_required_parameter",
        )
    if not isinstance(messages, list):
        raise invalid_type("messages", "an array", messages)
    if not messages:
        raise SimError(
            400,
            "Invalid 'messages': empty array. Expected an array with minimum length 1, "
            "but got an empty array instead.",
            param="messages",
            code="empty_array",
        )
    items = [item for i, m in enumerate(messages) for item in _message_items(m, i)]
    stop = body.get("stop")
    stops = (stop,) if isinstance(stop, str) else tuple(s for s in stop or () if isinstance(s, str))
    stream = body.get("stream") is True
    options = body.get("stream_options")
    tools, choice = _tools(body)
    return SimRequest(
        model=model,
        stream=stream,
        include_usage=stream and isinstance(options, dict) and options.get("include_usage") is True,
        max_tokens=_max_tokens(body),
        stop=stops,
        tools=tools,
        tool_choice=choice,
        items=tuple(items),
        header_behaviour=call.headers.get("x-sim-behavior") or call.headers.get("x-sim-behaviour"),
    )


def usage(answer: Answer) -> dict[str, Any]:
    return {
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": answer.completion_tokens,
        "total_tokens": answer.prompt_tokens + answer.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": answer.cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _tool_calls(call: SimToolCall) -> list[dict[str, Any]]:
    return [
        {
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": call.arguments},
        }
    ]


def completion(answer: Answer) -> bytes:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": None if answer.tool_call else answer.text,
        "refusal": None,
        "annotations": [],
    }
    if answer.tool_call is not None:
        message["tool_calls"] = _tool_calls(answer.tool_call)
    return orjson.dumps(
        {
            "id": new_completion_id(),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": answer.model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": _FINISH.get(answer.finish, answer.finish),
                }
            ],
            "usage": usage(answer),
            "service_tier": SERVICE_TIER,
            "system_fingerprint": SYSTEM_FINGERPRINT,
        }
    )


class OpenAIStream:
    """The SSE frames of one streamed completion (all chunks share id/created).

    Content and tool-argument frames are the hot path: they are assembled from a
    serialised prefix/suffix around the delta instead of serialising a whole chunk."""

    content_type = _SSE

    def __init__(self, answer: Answer, include_usage: bool) -> None:
        self._answer = answer
        self._id = new_completion_id()
        self._created = int(time.time())
        self._include_usage = include_usage
        head = orjson.dumps(self._head())
        self._prefix = b"data: " + head[:-1] + b',"choices":[{"index":0,"delta":'
        self._suffix = b',"logprobs":null,"finish_reason":null}]' + (
            b',"usage":null}\n\n' if include_usage else b"}\n\n"
        )

    def _head(self) -> dict[str, Any]:
        return {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._answer.model,
            "service_tier": SERVICE_TIER,
            "system_fingerprint": SYSTEM_FINGERPRINT,
        }

    def _frame(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        chunk = self._head()
        chunk["choices"] = [
            {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        ]
        if self._include_usage:
            chunk["usage"] = None
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    def start(self) -> bytes:
        if self._answer.tool_call is not None:
            return b""
        return self._frame({"role": "assistant", "content": "", "refusal": None})

    def text(self, piece: str) -> bytes:
        return b"".join((self._prefix, b'{"content":', orjson.dumps(piece), b"}", self._suffix))

    def tool_start(self, call: SimToolCall) -> bytes:
        first = _tool_calls(call)[0]
        first["index"] = 0
        first["function"]["arguments"] = ""
        return self._frame(
            {"role": "assistant", "content": None, "refusal": None, "tool_calls": [first]}
        )

    def tool_arguments(self, fragment: str) -> bytes:
        return b"".join(
            (
                self._prefix,
                b'{"tool_calls":[{"index":0,"function":{"arguments":',
                orjson.dumps(fragment),
                b"}}]}",
                self._suffix,
            )
        )

    def finish(self) -> bytes:
        answer = self._answer
        out = [self._frame({}, _FINISH.get(answer.finish, answer.finish))]
        if self._include_usage:
            chunk = self._head()
            chunk["choices"] = []
            chunk["usage"] = usage(answer)
            out.append(b"data: " + orjson.dumps(chunk) + b"\n\n")
        out.append(DONE)
        return b"".join(out)

    def malformed(self) -> bytes:
        return b"data: {not json\n\n"


def parse_openai_embed(call: Call, body: Any) -> EmbedRequest:
    if not isinstance(body, dict):
        raise SimError(400, "Invalid body: expected a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise SimError(400, "you must provide a model parameter", param="model")
    raw = body.get("input")
    inputs = [raw] if isinstance(raw, str) else raw
    if not isinstance(inputs, list) or not inputs or not all(isinstance(i, str) for i in inputs):
        raise SimError(
            400, "'input' must be a non-empty string or array of strings.", param="input"
        )
    dimensions = body.get("dimensions")
    if dimensions is not None and (not isinstance(dimensions, int) or dimensions < 1):
        raise invalid_type("dimensions", "a positive integer", dimensions)
    fmt = body.get("encoding_format", "float")
    if fmt not in ("float", "base64"):
        raise SimError(
            400, "'encoding_format' must be 'float' or 'base64'.", param="encoding_format"
        )
    return EmbedRequest(
        model=model,
        inputs=tuple(inputs),
        dimensions=dimensions,
        header_behaviour=call.headers.get("x-sim-behavior"),
        extra={"base64": fmt == "base64"},
    )


def embeddings_body(request: EmbedRequest, vectors: list[list[float]], tokens: int) -> bytes:
    def encode(vector: list[float]) -> Any:
        if request.extra.get("base64"):
            return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        return vector

    return orjson.dumps(
        {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": encode(v)}
                for i, v in enumerate(vectors)
            ],
            "model": request.model.partition("?")[0],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )


class OpenAIDialect:
    name = "openai"
    embeds = True
    routes: tuple[Route, ...] = (
        Route("POST", re.compile(r"(?:/v1)?/chat/completions"), "chat"),
        Route("POST", re.compile(r"(?:/v1)?/embeddings"), "embed"),
    )

    def parse_chat(self, call: Call, body: Any) -> SimRequest:
        return parse_openai_chat(call, body)

    def complete(self, call: Call, request: SimRequest, answer: Answer) -> bytes:
        return completion(answer)

    def stream_encoder(self, call: Call, request: SimRequest, answer: Answer) -> OpenAIStream:
        return OpenAIStream(answer, request.include_usage)

    def error(self, error: SimError) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        status, type_, code = _ERRORS[error.kind]
        if error.kind == "invalid_request":
            status = error.status
        headers: list[tuple[bytes, bytes]] = []
        if error.retry_after is not None:
            headers.append((b"retry-after", format_seconds(error.retry_after).encode()))
            headers.append((b"x-ratelimit-remaining-requests", b"0"))
        return status, headers, error_body(error.message, type_, error.param, error.code or code)

    def parse_embed(self, call: Call, body: Any) -> EmbedRequest:
        return parse_openai_embed(call, body)

    def embed_response(
        self, call: Call, request: EmbedRequest, vectors: list[list[float]], tokens: int
    ) -> bytes:
        return embeddings_body(request, vectors, tokens)


def format_seconds(seconds: float) -> str:
    """``1.0`` -> ``"1"``, ``0.25`` -> ``"0.25"`` (for ``retry-after``)."""
    return str(int(seconds)) if seconds == int(seconds) else repr(seconds)
