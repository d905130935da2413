"""The Gemini Developer API (v1beta): ``generateContent``, ``streamGenerateContent`` and
``batchEmbedContents`` on ``{base_url}/v1beta/models/{model}:<method>``.

The model is percent-encoded into the path; the key travels in ``x-goog-api-key``.
Request translation and error mapping live in
:mod:`services.workers.adapters.gemini_mapping`; this module sends, and turns answers
back into OpenAI shapes:

* text parts (thought summaries skipped) are joined into ``content``;
  ``functionCall`` parts become tool calls (Gemini's ``id`` when it sends one, else a
  new ``call_...``; arguments the JSON dump of ``args``); every candidate is a choice.
* ``finishReason``: ``STOP`` -> ``stop`` (``tool_calls`` when the answer calls
  functions), ``MAX_TOKENS`` -> ``length``, the safety family -> ``content_filter``,
  anything else -> ``stop``. A prompt blocked by ``promptFeedback.blockReason`` (no
  candidates) is an empty completion finished by ``content_filter``.
* ``usageMetadata``: prompt = ``promptTokenCount`` (+ ``toolUsePromptTokenCount``),
  completion = ``candidatesTokenCount`` + ``thoughtsTokenCount`` (the latter also as
  ``reasoning_tokens``), cached = ``cachedContentTokenCount``.
* Streams (``?alt=sse``, each ``data:`` a ``GenerateContentResponse``): text parts
  become content deltas, a ``functionCall`` part one tool-call delta carrying all its
  arguments, the first ``finishReason`` the finish chunk, and the last
  ``usageMetadata`` the usage chunk (estimated when Gemini sent none). An ``error``
  event is an :class:`UpstreamError`; a stream that ends before a ``finishReason``, or
  an event that is not a JSON object, is an :class:`UpstreamProtocolError`.
* Embeddings: ``{embeddings: [{values}]}`` -> an OpenAI embeddings list (base64 when
  asked); usage is ``usageMetadata.promptTokenCount`` when sent, else estimated.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import AsyncGenerator
from typing import Any, ClassVar, Final
from urllib.parse import quote

import orjson

from schemas.openai_chat import CompletionTokensDetails, Usage
from services.runtime.errors import UpstreamProtocolError
from services.runtime.tokens import estimate_prompt_tokens, estimate_text_tokens
from services.workers import openai_shapes
from services.workers.adapters import gemini_mapping as mapping
from services.workers.http import UpstreamHTTP
from services.workers.openai_shapes import ChunkBuilder
from services.workers.parsing import parse_object
from services.workers.protocol import Completion, StreamEvent, UpstreamCall
from services.workers.registry import register
from services.workers.sse import read_events
from services.workers.upstream_errors import error_from_stream_payload, translate_transport_errors

FILTERED: Final = frozenset(
    {
        "SAFETY",
        "RECITATION",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
    }
)


def finish_reason(reason: Any, has_tool_calls: bool) -> str:
    if reason == "MAX_TOKENS":
        return "length"
    if reason in FILTERED:
        return "content_filter"
    return "tool_calls" if has_tool_calls else "stop"


def _count(meta: dict[str, Any], key: str) -> int:
    value = meta.get(key) or 0
    if not isinstance(value, int):
        raise UpstreamProtocolError(f"Gemini sent a non-integer {key}")
    return value


def usage(meta: Any) -> Usage:
    """``usageMetadata`` as OpenAI usage (see the module docstring)."""
    if not isinstance(meta, dict):
        raise UpstreamProtocolError("Gemini sent usageMetadata that is not an object")
    prompt = _count(meta, "promptTokenCount") + _count(meta, "toolUsePromptTokenCount")
    thoughts = _count(meta, "thoughtsTokenCount")
    totals = openai_shapes.usage(
        prompt,
        _count(meta, "candidatesTokenCount") + thoughts,
        _count(meta, "cachedContentTokenCount"),
    )
    if not thoughts:
        return totals
    details = CompletionTokensDetails(reasoning_tokens=thoughts)
    return totals.model_copy(update={"completion_tokens_details": details})


def _parts(dep: str, candidate: Any) -> list[dict[str, Any]]:
    if not isinstance(candidate, dict):
        raise UpstreamProtocolError(f"deployment {dep} sent a candidate that is not an object")
    content = candidate.get("content") or {}
    parts = content.get("parts") if isinstance(content, dict) else None
    if parts is None:
        return []
    if not isinstance(parts, list) or not all(isinstance(p, dict) for p in parts):
        raise UpstreamProtocolError(f"deployment {dep} sent malformed parts")
    return parts


def _text(parts: list[dict[str, Any]]) -> str:
    return "".join(
        p["text"] for p in parts if isinstance(p.get("text"), str) and p.get("thought") is not True
    )


def _tool_calls(dep: str, parts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for part in parts:
        call = part.get("functionCall")
        if call is None:
            continue
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            raise UpstreamProtocolError(f"deployment {dep} sent a functionCall without a name")
        call_id = call.get("id")
        if not isinstance(call_id, str) or not call_id:
            call_id = openai_shapes.new_call_id()
        arguments = orjson.dumps(call.get("args") or {}).decode()
        out.append(openai_shapes.tool_call(call_id, call["name"], arguments))
    return out


def _blocked(data: dict[str, Any]) -> bool:
    feedback = data.get("promptFeedback")
    return isinstance(feedback, dict) and bool(feedback.get("blockReason"))


def completion(dep: str, data: dict[str, Any], model: str) -> Completion:
    """A ``GenerateContentResponse`` as a ``chat.completion`` (one choice per candidate)."""
    candidates = data.get("candidates") or []
    if not isinstance(candidates, list):
        raise UpstreamProtocolError(f"deployment {dep} sent candidates that are not a list")
    meta = data.get("usageMetadata")
    totals = usage(meta) if meta is not None else None
    model = str(data.get("modelVersion") or model)
    if not candidates:
        if not _blocked(data):
            raise UpstreamProtocolError(f"deployment {dep} answered without candidates")
        blocked = openai_shapes.completion(
            model=model, content="", finish_reason="content_filter", usage=totals
        )
        return Completion(response=blocked, usage=totals, finish_reason="content_filter")
    response: dict[str, Any] = {}
    choices = []
    for index, candidate in enumerate(candidates):
        parts = _parts(dep, candidate)
        calls = _tool_calls(dep, parts)
        text = _text(parts)
        finish = finish_reason(candidate.get("finishReason"), bool(calls))
        response = openai_shapes.completion(
            model=model,
            content=text if text or not calls else None,
            finish_reason=finish,
            usage=totals,
            tool_calls=calls,
        )
        choice = response["choices"][0]
        choice["index"] = index
        choices.append(choice)
    response["choices"] = choices
    return Completion(response=response, usage=totals, finish_reason=choices[0]["finish_reason"])


class StreamTranslator:
    """Turns the ``GenerateContentResponse`` events of one stream into chunks.

    ``feed`` each parsed event in order; ``finished`` is True once a finish reason was
    seen; then ``close`` returns the usage chunk (from the last ``usageMetadata``, or
    an estimate from the request and the text streamed when Gemini sent none)."""

    def __init__(self, dep: str, model: str, body: dict[str, Any]) -> None:
        self._dep = dep
        self._body = body
        self._chunks = ChunkBuilder(model)
        self._started = False
        self._tools = 0
        self._streamed = 0
        self._usage: Usage | None = None
        self.finished = False

    def feed(self, data: dict[str, Any]) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        if not self._started:
            self._started = True
            out.append(self._chunks.role())
        if data.get("usageMetadata") is not None:
            self._usage = usage(data["usageMetadata"])
        candidates = data.get("candidates") or []
        if not isinstance(candidates, list):
            raise UpstreamProtocolError(f"deployment {self._dep} sent malformed candidates")
        if self.finished:
            return out
        if not candidates:
            if _blocked(data):
                self.finished = True
                out.append(self._chunks.finish("content_filter"))
            return out
        parts = _parts(self._dep, candidates[0])
        text = _text(parts)
        if text:
            self._streamed += estimate_text_tokens(text)
            out.append(self._chunks.content(text))
        for call in _tool_calls(self._dep, parts):
            function = call["function"]
            out.append(
                self._chunks.tool_start(
                    self._tools, call["id"], function["name"], function["arguments"]
                )
            )
            self._streamed += estimate_text_tokens(function["arguments"])
            self._tools += 1
        reason = candidates[0].get("finishReason")
        if reason:
            self.finished = True
            out.append(self._chunks.finish(finish_reason(reason, self._tools > 0)))
        return out

    def close(self) -> StreamEvent:
        totals = self._usage or openai_shapes.usage(
            estimate_prompt_tokens(self._body), self._streamed
        )
        return self._chunks.usage(totals)


def embeddings(dep: str, data: dict[str, Any], body: dict[str, Any]) -> Completion:
    """A ``batchEmbedContents`` answer as an OpenAI embeddings list."""
    items = data.get("embeddings")
    if not isinstance(items, list) or not all(
        isinstance(e, dict) and isinstance(e.get("values"), list) for e in items
    ):
        raise UpstreamProtocolError(f"deployment {dep} answered without embeddings")
    as_base64 = body.get("encoding_format") == "base64"

    def encode(vector: list[float]) -> Any:
        if not as_base64:
            return vector
        try:
            return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        except struct.error:
            raise UpstreamProtocolError(f"deployment {dep} sent a non-numeric vector") from None

    meta = data.get("usageMetadata")
    tokens = meta.get("promptTokenCount") if isinstance(meta, dict) else None
    if not isinstance(tokens, int):
        tokens = estimate_prompt_tokens(body)
    response = {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": encode(e["values"])}
            for i, e in enumerate(items)
        ],
        "model": body.get("model"),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    totals = Usage(prompt_tokens=tokens, completion_tokens=0, total_tokens=tokens)
    return Completion(response=response, usage=totals, finish_reason=None)


@register
class GeminiAdapter:
    name: ClassVar[str] = "gemini"

    def __init__(self, http: UpstreamHTTP) -> None:
        self._http = http

    async def complete(self, call: UpstreamCall) -> Completion:
        body = mapping.chat_request(call.body, call.deployment, stream=False)
        data = await self._post(call, "generateContent", body)
        return completion(call.deployment.deployment, data, self._model(call))

    async def stream(self, call: UpstreamCall) -> AsyncGenerator[StreamEvent, None]:
        dep = call.deployment.deployment
        body = mapping.chat_request(call.body, call.deployment, stream=True)
        translator = StreamTranslator(dep, self._model(call), call.body)
        with translate_transport_errors(dep):
            async with self._http.stream(
                self._url(call, "streamGenerateContent") + "?alt=sse",
                orjson.dumps(body),
                self._headers(call, "text/event-stream"),
            ) as response:
                if response.status >= 400:
                    raw = await response.read()
                    raise mapping.http_error(dep, response.status, response.headers, raw)
                async for message in read_events(response.lines()):
                    data = parse_object(dep, message.data.encode())
                    if "error" in data:
                        raise error_from_stream_payload(dep, data)
                    for event in translator.feed(data):
                        yield event
        if not translator.finished:
            raise UpstreamProtocolError(f"deployment {dep} ended the stream before finishing")
        yield translator.close()

    async def embed(self, call: UpstreamCall) -> Completion:
        body = mapping.embed_request(call.body, call.deployment)
        data = await self._post(call, "batchEmbedContents", body)
        return embeddings(call.deployment.deployment, data, call.body)

    async def _post(self, call: UpstreamCall, method: str, body: dict[str, Any]) -> dict[str, Any]:
        dep = call.deployment.deployment
        with translate_transport_errors(dep):
            reply = await self._http.post(
                self._url(call, method), orjson.dumps(body), self._headers(call, "application/json")
            )
        if reply.status >= 400:
            raise mapping.http_error(dep, reply.status, reply.headers, reply.body)
        return parse_object(dep, reply.body)

    def _model(self, call: UpstreamCall) -> str:
        return mapping.model_name(call.body, call.deployment)

    def _url(self, call: UpstreamCall, method: str) -> str:
        model = quote(self._model(call), safe="")
        return f"{call.deployment.base_url}/v1beta/models/{model}:{method}"

    def _headers(self, call: UpstreamCall, accept: str) -> dict[str, str]:
        headers = {"content-type": "application/json", "accept": accept}
        if call.deployment.api_key is not None:
            headers["x-goog-api-key"] = call.deployment.api_key.get_secret_value()
        return headers
