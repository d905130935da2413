"""Build the normalized (OpenAI) objects that adapters of other dialects return.

Adapters for providers whose wire format is not OpenAI's translate each
response into a ``chat.completion`` (:func:`completion`) and each stream event
into ``chat.completion.chunk`` objects (:class:`ChunkBuilder`), so the ingress
relays one shape whatever the provider. Usage is a ``schemas`` ``Usage``, with
cached input tokens in ``prompt_tokens_details.cached_tokens``.
"""

from __future__ import annotations

import time
from random import getrandbits
from typing import Any

from schemas.openai_chat import PromptTokensDetails, Usage
from services.workers.protocol import StreamEvent


def new_completion_id() -> str:
    return f"chatcmpl-{getrandbits(120):030x}"


def new_call_id() -> str:
    return f"call_{getrandbits(96):024x}"


def usage(prompt: int, completion: int, cached: int = 0) -> Usage:
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=cached),
    )


def tool_call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def completion(
    *,
    model: str,
    content: str | None,
    finish_reason: str,
    usage: Usage | None,
    tool_calls: list[dict[str, Any]] | None = None,
    completion_id: str | None = None,
) -> dict[str, Any]:
    """A ``chat.completion`` with one choice."""
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    out: dict[str, Any] = {
        "id": completion_id or new_completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}
        ],
    }
    if usage is not None:
        out["usage"] = usage.model_dump(exclude_none=True)
    return out


class ChunkBuilder:
    """The ``chat.completion.chunk`` events of one streamed answer (shared id/created).

    Call ``role`` once first, then ``content``/``tool_start``/``tool_arguments`` as
    deltas arrive, ``finish`` once with the finish reason, and ``usage`` last with
    the totals (a chunk with ``choices: []``, as OpenAI sends on request)."""

    def __init__(self, model: str, completion_id: str | None = None) -> None:
        self.model = model
        self.id = completion_id or new_completion_id()
        self.created = int(time.time())

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            ],
        }

    def role(self) -> StreamEvent:
        return StreamEvent(self._chunk({"role": "assistant", "content": ""}))

    def content(self, text: str) -> StreamEvent:
        return StreamEvent(self._chunk({"content": text}), has_output=bool(text))

    def tool_start(self, index: int, call_id: str, name: str, arguments: str = "") -> StreamEvent:
        delta = {
            "tool_calls": [
                {
                    "index": index,
                    "id": call_id,
                    "type": "function",
                    "function": {"name": name, "arguments": arguments},
                }
            ]
        }
        return StreamEvent(self._chunk(delta), has_output=True)

    def tool_arguments(self, index: int, fragment: str) -> StreamEvent:
        delta = {"tool_calls": [{"index": index, "function": {"arguments": fragment}}]}
        return StreamEvent(self._chunk(delta), has_output=bool(fragment))

    def finish(self, finish_reason: str) -> StreamEvent:
        return StreamEvent(self._chunk({}, finish_reason), finish_reason=finish_reason)

    def usage(self, totals: Usage) -> StreamEvent:
        chunk = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": totals.model_dump(exclude_none=True),
        }
        return StreamEvent(chunk, usage=totals)
