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

Request parsing and the prompt-token estimate live in :mod:`services.simulator.request`, the
tool-call choice and its completion-token rule in :mod:`services.simulator.tools`, and
:class:`~services.simulator.errors.OpenAIError` in :mod:`services.simulator.errors`.
"""

from __future__ import annotations

import time
from functools import lru_cache
from random import getrandbits
from typing import Any, Final

import orjson

from services.simulator.errors import OpenAIError
from services.simulator.tools import ToolCall, new_tool_call_id

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


def new_completion_id() -> str:
    return f"chatcmpl-{getrandbits(120):030x}"


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
