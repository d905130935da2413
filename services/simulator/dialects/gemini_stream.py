"""Gemini's answers on the wire: ``GenerateContentResponse`` bodies, streams, embeddings
and errors, as the simulator renders them.

* A response: ``{candidates: [{content: {parts, role: "model"}, finishReason, index: 0}],
  usageMetadata: {promptTokenCount, candidatesTokenCount, totalTokenCount,
  promptTokensDetails, cachedContentTokenCount (only when > 0)}, modelVersion,
  responseId}``. Text is one ``text`` part; a tool call is one ``functionCall`` part
  (``{name, args}``; the Gemini API sends no call id). Finish reasons: ``STOP`` (also
  for stop sequences and function calls) and ``MAX_TOKENS``.
* A stream (``streamGenerateContent``): one ``GenerateContentResponse`` per token
  with a single ``text`` part and the running ``usageMetadata`` (as Google sends it);
  the last one has an empty text part (or, for a tool call, the whole
  ``functionCall`` part), ``finishReason`` and the final ``usageMetadata``.
  With ``alt=sse`` each is an SSE ``data:`` event (``\\r\\n\\r\\n``-terminated, as
  Google sends them); without it the stream is one JSON array, written as it goes.
* Errors: ``{"error": {"code", "message", "status", "details"?}}`` with Google's
  canonical status names; a rate limit carries a ``google.rpc.RetryInfo`` detail
  (``retryDelay`` like ``"7s"``), not a ``retry-after`` header.
"""

from __future__ import annotations

from random import getrandbits
from typing import Any, Final

import orjson

from services.simulator.dialect import Answer, SimToolCall

_SSE: Final = b"text/event-stream"
_JSON: Final = b"application/json; charset=UTF-8"
FINISH: Final = {
    "stop": "STOP",
    "stop_sequence": "STOP",
    "tool_calls": "STOP",
    "length": "MAX_TOKENS",
}


def new_response_id() -> str:
    return f"{getrandbits(128):032x}"


def usage_metadata(answer: Answer, completion: int | None = None) -> dict[str, Any]:
    """``usageMetadata``; ``completion`` is the running output count of a stream event."""
    done = answer.completion_tokens if completion is None else completion
    out: dict[str, Any] = {
        "promptTokenCount": answer.prompt_tokens,
        "candidatesTokenCount": done,
        "totalTokenCount": answer.prompt_tokens + done,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": answer.prompt_tokens}],
    }
    if answer.cached_tokens > 0:
        out["cachedContentTokenCount"] = answer.cached_tokens
        out["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": answer.cached_tokens}]
    return out


def function_call_part(call: SimToolCall) -> dict[str, Any]:
    return {"functionCall": {"name": call.name, "args": orjson.loads(call.arguments or "{}")}}


def _response(
    answer: Answer,
    response_id: str,
    parts: list[dict[str, Any]],
    final: bool,
    completion: int | None = None,
) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}}
    if final:
        candidate["finishReason"] = FINISH[answer.finish]
    candidate["index"] = 0
    out: dict[str, Any] = {"candidates": [candidate]}
    out["usageMetadata"] = usage_metadata(answer, None if final else completion)
    out["modelVersion"] = answer.model
    out["responseId"] = response_id
    return out


def completion(answer: Answer) -> bytes:
    """The non-streamed ``generateContent`` answer."""
    call = answer.tool_call
    parts = [function_call_part(call)] if call is not None else [{"text": answer.text}]
    return orjson.dumps(_response(answer, new_response_id(), parts, final=True))


class GeminiStream:
    """The frames of one ``streamGenerateContent`` answer (SSE, or a JSON array).

    A tool call is sent whole in the last frame: Gemini streams no argument fragments."""

    def __init__(self, answer: Answer, sse: bool) -> None:
        self._answer = answer
        self._sse = sse
        self._id = new_response_id()
        self._frames = 0
        self._tokens = 0
        self._call: SimToolCall | None = None
        self.content_type = _SSE if sse else _JSON

    def _frame(self, payload: dict[str, Any]) -> bytes:
        data = orjson.dumps(payload)
        self._frames += 1
        if self._sse:
            return b"data: " + data + b"\r\n\r\n"
        return data if self._frames == 1 else b",\r\n" + data

    def start(self) -> bytes:
        return b"" if self._sse else b"["

    def text(self, piece: str) -> bytes:
        self._tokens += 1
        parts = [{"text": piece}]
        return self._frame(_response(self._answer, self._id, parts, False, self._tokens))

    def tool_start(self, call: SimToolCall) -> bytes:
        self._call = call
        return b""

    def tool_arguments(self, fragment: str) -> bytes:
        return b""

    def finish(self) -> bytes:
        call = self._call
        parts = [function_call_part(call)] if call is not None else [{"text": ""}]
        frame = self._frame(_response(self._answer, self._id, parts, final=True))
        return frame if self._sse else frame + b"]"

    def malformed(self) -> bytes:
        return b"data: {not json\r\n\r\n" if self._sse else b",\r\n{not json"


def error_body(
    code: int, status: str, message: str, details: list[dict[str, Any]] | None = None
) -> bytes:
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        error["details"] = details
    return orjson.dumps({"error": error})


def retry_info(seconds: float) -> dict[str, Any]:
    """A ``google.rpc.RetryInfo`` detail: ``retryDelay`` is a protobuf Duration (``"7s"``)."""
    delay = f"{int(seconds)}s" if seconds == int(seconds) else f"{seconds:.3f}s"
    return {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}


def embedding_body(vector: list[float]) -> bytes:
    return orjson.dumps({"embedding": {"values": vector}})


def batch_embedding_body(vectors: list[list[float]]) -> bytes:
    return orjson.dumps({"embeddings": [{"values": v} for v in vectors]})
