"""OpenAI Chat Completions wire shapes, as the simulator speaks them.

* Non-stream: one ``chat.completion`` object.
* Stream (``text/event-stream``, frames ``data: <json>\\n\\n``): a first chunk whose delta is
  ``{"role": "assistant", "content": "", "refusal": null}``, one chunk per token, a final chunk
  with an empty delta and ``finish_reason``, then, only when ``stream_options.include_usage``
  is true, a usage chunk with ``choices: []`` (and every earlier chunk carries
  ``"usage": null``), then ``data: [DONE]``.
* Tool calls: one call to the chosen function; in streams the first chunk carries the call's
  ``index``/``id``/``type``/``function.name`` with ``arguments: ""`` and the arguments follow
  in 2-3 fragments; ``finish_reason`` is ``tool_calls``.
* Errors: ``{"error": {"message", "type", "param", "code"}}``.

Output text is deterministic: token ``i`` is ``WORDS[i % len(WORDS)] + " "``.

Prompt-token rule (a cheap estimate, not a tokenizer): for each message, count the
whitespace-separated words of its text (a string ``content``, or the ``text`` of each
``{"type": "text"}`` part of an array ``content``); the message costs
``max(1, ceil(words * 4 / 3))`` tokens; ``prompt_tokens`` is the sum over messages.

Tool-call completion tokens: ``max(1, ceil(len(name + arguments) / 4))``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import lru_cache
from random import getrandbits
from typing import Any, Final

import orjson

SYSTEM_FINGERPRINT: Final = "fp_igwsim0001"
SERVICE_TIER: Final = "default"
MODEL_CREATED: Final = 1_700_000_000
DONE: Final = b"data: [DONE]\n\n"
MALFORMED_BODY: Final = b"{not json"
MALFORMED_FRAME: Final = b"data: {not json\n\n"

_LOREM: Final = (
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor "
    "incididunt ut labore et dolore magna aliqua ut enim ad minim veniam quis nostrud "
    "exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat duis aute irure "
    "dolor in reprehenderit in voluptate velit esse cillum dolore eu fugiat nulla pariatur"
)
WORDS: Final[tuple[str, ...]] = tuple(_LOREM.split())
TOKENS: Final[tuple[str, ...]] = tuple(word + " " for word in WORDS)


class OpenAIError(Exception):
    """An error answered in OpenAI's error shape."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.param = param
        self.code = code

    def body(self) -> bytes:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(
    message: str, type_: str, param: str | None = None, code: str | None = None
) -> bytes:
    return orjson.dumps(
        {"error": {"message": message, "type": type_, "param": param, "code": code}}
    )


# ---------------------------------------------------------------------------------------------
# Request
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ToolCall:
    """The one tool call the simulator answers with."""

    name: str
    arguments: str

    @property
    def completion_tokens(self) -> int:
        return max(1, -(-(len(self.name) + len(self.arguments)) // 4))


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


# ---------------------------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------------------------


def _example_value(schema: Any) -> Any:
    if not isinstance(schema, dict):
        return "x"
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind in ("number", "integer"):
        return 1
    if kind == "boolean":
        return True
    if kind == "array":
        return []
    if kind == "object":
        return {}
    if kind == "null":
        return None
    return "x"


def tool_arguments(parameters: Any) -> str:
    """A small valid JSON object for a function's parameter schema: each property gets
    ``"x"`` (string), ``1`` (number/integer), ``true`` (boolean), ``[]``, ``{}``, or the
    first ``enum`` value."""
    properties = parameters.get("properties") if isinstance(parameters, dict) else None
    if not isinstance(properties, dict):
        return "{}"
    return orjson.dumps({str(k): _example_value(v) for k, v in properties.items()}).decode()


def _function_tools(tools: list[Any]) -> list[dict[str, Any]]:
    functions: list[dict[str, Any]] = []
    for tool in tools:
        if isinstance(tool, dict) and tool.get("type", "function") == "function":
            function = tool.get("function")
            if isinstance(function, dict) and isinstance(function.get("name"), str):
                functions.append(function)
    return functions


def choose_tool_call(request: ChatRequest, forced: bool) -> ToolCall | None:
    """The tool call to answer with, or None for a text answer.

    A call is made when ``tool_choice`` names a function or is ``"required"``, or when the
    behaviour forces it (``tool_call=1``); it targets the named function, else the first one.
    """
    choice = request.tool_choice
    named: str | None = None
    if isinstance(choice, dict) and choice.get("type") == "function":
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(name, str):
            raise OpenAIError(
                400,
                "Missing required parameter: 'tool_choice.function.name'.",
                param="tool_choice.function.name",
                code="missing_required_parameter",
            )
        named = name
    wanted = forced or named is not None or choice == "required"
    if not wanted:
        return None
    functions = _function_tools(request.tools or [])
    if not functions:
        param = "tool_choice" if (named is not None or choice == "required") else "tools"
        raise OpenAIError(
            400,
            "A tool call was requested but the request has no function tools.",
            param=param,
        )
    target = functions[0]
    if named is not None:
        found = next((f for f in functions if f["name"] == named), None)
        if found is None:
            raise OpenAIError(
                400,
                f"Invalid value for 'tool_choice': no function named {named!r} in 'tools'.",
                param="tool_choice",
                code="invalid_value",
            )
        target = found
    return ToolCall(name=target["name"], arguments=tool_arguments(target.get("parameters")))


def split_arguments(arguments: str) -> list[str]:
    """Split tool-call arguments in 2-3 fragments, as a streaming model would."""
    if len(arguments) < 3:
        return list(arguments) or [""]
    third = len(arguments) // 3
    return [arguments[:third], arguments[third : 2 * third], arguments[2 * third :]]


# ---------------------------------------------------------------------------------------------
# Responses
# ---------------------------------------------------------------------------------------------


def new_completion_id() -> str:
    return f"chatcmpl-{getrandbits(120):030x}"


def new_tool_call_id() -> str:
    return f"call_{getrandbits(96):024x}"


def new_request_id() -> bytes:
    return f"req_{getrandbits(128):032x}".encode()


@lru_cache(maxsize=512)
def completion_text(tokens: int) -> str:
    """The deterministic output of ``tokens`` tokens."""
    count = len(TOKENS)
    return "".join(TOKENS[i % count] for i in range(tokens))


def token_text(index: int) -> str:
    return TOKENS[index % len(TOKENS)]


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def chat_completion(
    *,
    model: str,
    content: str | None,
    finish_reason: str,
    prompt_tokens: int,
    completion_tokens: int,
    tool_call: ToolCall | None = None,
    completion_id: str | None = None,
    created: int | None = None,
) -> bytes:
    """A non-stream ``chat.completion`` object, serialised."""
    message: dict[str, Any] = {
        "role": "assistant",
        "content": content,
        "refusal": None,
        "annotations": [],
    }
    if tool_call is not None:
        message["tool_calls"] = [
            {
                "id": new_tool_call_id(),
                "type": "function",
                "function": {"name": tool_call.name, "arguments": tool_call.arguments},
            }
        ]
    return orjson.dumps(
        {
            "id": completion_id or new_completion_id(),
            "object": "chat.completion",
            "created": int(time.time()) if created is None else created,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": finish_reason,
                }
            ],
            "usage": usage(prompt_tokens, completion_tokens),
            "service_tier": SERVICE_TIER,
            "system_fingerprint": SYSTEM_FINGERPRINT,
        }
    )


class ChunkEncoder:
    """Builds the SSE frames of one streamed completion (all chunks share id/created).

    Content and tool-argument frames are the hot path: they are assembled from a serialised
    prefix/suffix around the delta instead of serialising a whole chunk object each time."""

    __slots__ = ("_created", "_id", "_include_usage", "_model", "_prefix", "_suffix")

    def __init__(self, model: str, include_usage: bool) -> None:
        self._id = new_completion_id()
        self._created = int(time.time())
        self._model = model
        self._include_usage = include_usage
        head = orjson.dumps(
            {
                "id": self._id,
                "object": "chat.completion.chunk",
                "created": self._created,
                "model": model,
                "service_tier": SERVICE_TIER,
                "system_fingerprint": SYSTEM_FINGERPRINT,
            }
        )
        self._prefix = b"data: " + head[:-1] + b',"choices":[{"index":0,"delta":'
        self._suffix = b',"logprobs":null,"finish_reason":null}]' + (
            b',"usage":null}\n\n' if include_usage else b"}\n\n"
        )

    def _frame(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        chunk: dict[str, Any] = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "service_tier": SERVICE_TIER,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            ],
        }
        if self._include_usage:
            chunk["usage"] = None
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    def role(self) -> bytes:
        return self._frame({"role": "assistant", "content": "", "refusal": None})

    def content(self, text: str) -> bytes:
        return b"".join((self._prefix, b'{"content":', orjson.dumps(text), b"}", self._suffix))

    def tool_call_start(self, call: ToolCall) -> bytes:
        return self._frame(
            {
                "role": "assistant",
                "content": None,
                "refusal": None,
                "tool_calls": [
                    {
                        "index": 0,
                        "id": new_tool_call_id(),
                        "type": "function",
                        "function": {"name": call.name, "arguments": ""},
                    }
                ],
            }
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

    def finish(self, finish_reason: str) -> bytes:
        return self._frame({}, finish_reason)

    def usage(self, prompt_tokens: int, completion_tokens: int) -> bytes:
        chunk = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "service_tier": SERVICE_TIER,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": [],
            "usage": usage(prompt_tokens, completion_tokens),
        }
        return b"data: " + orjson.dumps(chunk) + b"\n\n"


def fault_error(fault: str, retry_after: float) -> OpenAIError:
    """The OpenAI error answered for an HTTP-error fault (429, 500, 503, 400, 401)."""
    if fault == "429":
        return OpenAIError(
            429,
            "Rate limit reached for sim in organization org-igwsim on requests per min (RPM): "
            f"Limit 60, Used 60, Requested 1. Please try again in {format_seconds(retry_after)}s. "
            "Visit https://platform.openai.com/account/rate-limits to learn more.",
            "requests",
            code="rate_limit_exceeded",
        )
    if fault == "500":
        return OpenAIError(
            500,
            "The server had an error while processing your request. Sorry about that!",
            "server_error",
        )
    if fault == "503":
        return OpenAIError(
            503,
            "The server is overloaded or not ready yet. Please try again later.",
            "service_unavailable_error",
            code="server_is_overloaded",
        )
    if fault == "401":
        return OpenAIError(
            401,
            "Incorrect API key provided. You can find your API key at "
            "https://platform.openai.com/account/api-keys.",
            code="invalid_api_key",
        )
    return OpenAIError(400, "Invalid request (simulated fault).")


def format_seconds(seconds: float) -> str:
    """``1.0`` -> ``"1"``, ``0.25`` -> ``"0.25"`` (for ``retry-after``)."""
    return str(int(seconds)) if seconds == int(seconds) else repr(seconds)


def models_list() -> bytes:
    return orjson.dumps({"object": "list", "data": [model_object("sim")]})


def model_object(model_id: str) -> dict[str, Any]:
    return {
        "id": model_id,
        "object": "model",
        "created": MODEL_CREATED,
        "owned_by": "igw-simulator",
    }
