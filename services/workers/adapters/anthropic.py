"""Anthropic's Messages API.

``POST {base_url}/v1/messages`` with ``x-api-key``, ``anthropic-version``
(the deployment's ``api_version``, default ``2023-06-01``) and a JSON body
translated by :mod:`services.workers.adapters.anthropic_mapping`.

Streams are Anthropic's SSE events, turned into OpenAI chunks by
:class:`StreamTranslator`: ``message_start`` gives the role chunk (and the input
usage), text deltas become content chunks, a ``tool_use`` block becomes a
``tool_start`` (with an OpenAI tool index counting the tool blocks) followed by
its ``input_json_delta`` fragments, ``message_delta`` gives the finish chunk
(and the output usage), ``message_stop`` the usage chunk. ``ping`` and unknown
events are skipped (the API may add event types); an ``error`` event raises the
``UpstreamError`` its error type maps to; a stream that ends before
``message_stop`` raises ``UpstreamProtocolError``.

Anthropic has no embeddings API: ``embed`` raises ``InvalidRequest``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterator
from typing import Any, ClassVar, Final

import orjson

from schemas.openai_chat import Usage
from services.runtime.errors import (
    GatewayError,
    InvalidRequest,
    UpstreamError,
    UpstreamProtocolError,
)
from services.workers.adapters import anthropic_mapping as mapping
from services.workers.http import UpstreamHTTP
from services.workers.openai_shapes import ChunkBuilder
from services.workers.parsing import parse_object
from services.workers.protocol import Completion, StreamEvent, UpstreamCall
from services.workers.registry import register
from services.workers.sse import SSEMessage, read_events
from services.workers.upstream_errors import (
    error_from_response,
    parse_retry_after,
    translate_transport_errors,
)

DEFAULT_VERSION: Final = "2023-06-01"


def _http_error(dep: str, status: int, headers: Any, body: bytes) -> GatewayError:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        return mapping.error_for(dep, status, data["error"], parse_retry_after(headers))
    return error_from_response(dep, status, headers, body)


def stream_error(dep: str, payload: dict[str, Any]) -> UpstreamError:
    """The ``UpstreamError`` for an ``error`` event (never a client-side 4xx class)."""
    error = mapping.error_for(dep, None, payload.get("error"), None)
    return error if isinstance(error, UpstreamError) else UpstreamError(error.message)


class StreamTranslator:
    """Anthropic stream events in, OpenAI chunk events out (one instance per stream)."""

    def __init__(self, dep: str, model: str) -> None:
        self._dep = dep
        self._chunks = ChunkBuilder(model)
        self._tools: dict[int, int] = {}  # Anthropic block index -> OpenAI tool index
        self._input: dict[str, Any] = {}
        self._output = 0
        self.done = False

    def feed(self, message: SSEMessage) -> Iterator[StreamEvent]:
        data = parse_object(self._dep, message.data)
        kind = data.get("type") or message.event
        if kind == "error":
            raise stream_error(self._dep, data)
        if kind == "message_start":
            yield from self._start(data.get("message"))
        elif kind == "content_block_start":
            yield from self._block_start(data)
        elif kind == "content_block_delta":
            yield from self._delta(data)
        elif kind == "message_delta":
            yield from self._message_delta(data)
        elif kind == "message_stop":
            self.done = True
            yield self._chunks.usage(self.usage())

    def usage(self) -> Usage:
        return mapping.usage({**self._input, "output_tokens": self._output})

    def _index(self, data: dict[str, Any]) -> int:
        index = data.get("index")
        if not isinstance(index, int):
            raise UpstreamProtocolError(f"deployment {self._dep} sent a block without an index")
        return index

    def _start(self, message: Any) -> Iterator[StreamEvent]:
        if not isinstance(message, dict):
            raise UpstreamProtocolError(f"deployment {self._dep} sent message_start without one")
        if isinstance(message.get("model"), str):
            self._chunks.model = message["model"]
        raw = message.get("usage")
        if isinstance(raw, dict):
            self._input = raw
            self._output = int(raw.get("output_tokens") or 0)
        yield self._chunks.role()

    def _block_start(self, data: dict[str, Any]) -> Iterator[StreamEvent]:
        block = data.get("content_block")
        if not isinstance(block, dict):
            raise UpstreamProtocolError(f"deployment {self._dep} sent a block without content")
        if block.get("type") == "text" and block.get("text"):
            yield self._chunks.content(str(block["text"]))
        elif block.get("type") == "tool_use":
            tool_index = len(self._tools)
            self._tools[self._index(data)] = tool_index
            yield self._chunks.tool_start(tool_index, str(block.get("id")), str(block.get("name")))
            if block.get("input"):  # the API sends {} and streams the input as deltas
                yield self._chunks.tool_arguments(tool_index, orjson.dumps(block["input"]).decode())

    def _delta(self, data: dict[str, Any]) -> Iterator[StreamEvent]:
        delta = data.get("delta")
        if not isinstance(delta, dict):
            raise UpstreamProtocolError(f"deployment {self._dep} sent a delta without one")
        if delta.get("type") == "text_delta" and delta.get("text"):
            yield self._chunks.content(str(delta["text"]))
        elif delta.get("type") == "input_json_delta" and delta.get("partial_json"):
            tool_index = self._tools.get(self._index(data))
            if tool_index is None:
                raise UpstreamProtocolError(
                    f"deployment {self._dep} sent tool input for a block that is not a tool call"
                )
            yield self._chunks.tool_arguments(tool_index, str(delta["partial_json"]))

    def _message_delta(self, data: dict[str, Any]) -> Iterator[StreamEvent]:
        raw = data.get("usage")
        if isinstance(raw, dict):
            self._output = int(raw.get("output_tokens") or self._output)
            cumulative = {k: v for k, v in raw.items() if k != "output_tokens" and v is not None}
            self._input = {**self._input, **cumulative}
        delta = data.get("delta")
        stop_reason = delta.get("stop_reason") if isinstance(delta, dict) else None
        yield self._chunks.finish(mapping.finish_reason(stop_reason))


@register
class AnthropicAdapter:
    name: ClassVar[str] = "anthropic"

    def __init__(self, http: UpstreamHTTP) -> None:
        self._http = http

    async def complete(self, call: UpstreamCall) -> Completion:
        dep = call.deployment.deployment
        body = mapping.to_anthropic(call.body, call.deployment, stream=False)
        with translate_transport_errors(dep):
            reply = await self._http.post(self._url(call), orjson.dumps(body), self._headers(call))
        if reply.status >= 400:
            raise _http_error(dep, reply.status, reply.headers, reply.body)
        data = parse_object(dep, reply.body)
        if data.get("type") == "error":
            raise _http_error(dep, reply.status, reply.headers, reply.body)
        if data.get("type") != "message" or not isinstance(data.get("content"), list):
            raise UpstreamProtocolError(f"deployment {dep} answered without a message")
        response, usage, finish = mapping.to_completion(data)
        return Completion(response=response, usage=usage, finish_reason=finish)

    async def stream(self, call: UpstreamCall) -> AsyncGenerator[StreamEvent, None]:
        dep = call.deployment.deployment
        body = mapping.to_anthropic(call.body, call.deployment, stream=True)
        translator = StreamTranslator(dep, str(body["model"]))
        with translate_transport_errors(dep):
            async with self._http.stream(
                self._url(call), orjson.dumps(body), self._headers(call)
            ) as response:
                if response.status >= 400:
                    raw = await response.read()
                    raise _http_error(dep, response.status, response.headers, raw)
                async for message in read_events(response.lines()):
                    if translator.done or message.event == "ping":
                        continue  # read to the end so the connection can be reused
                    for event in translator.feed(message):
                        yield event
        if not translator.done:
            raise UpstreamProtocolError(f"deployment {dep} ended the stream before message_stop")

    async def embed(self, call: UpstreamCall) -> Completion:
        raise InvalidRequest(
            f"deployment {call.deployment.deployment} is served by Anthropic, "
            "which has no embeddings API",
            code="embeddings_not_supported",
        )

    def _url(self, call: UpstreamCall) -> str:
        return f"{call.deployment.base_url}/v1/messages"

    def _headers(self, call: UpstreamCall) -> dict[str, str]:
        headers = {
            "content-type": "application/json",
            "accept": "application/json",
            "anthropic-version": call.deployment.api_version or DEFAULT_VERSION,
        }
        if call.deployment.api_key is not None:
            headers["x-api-key"] = call.deployment.api_key.get_secret_value()
        return headers
