"""Amazon Bedrock Runtime: Converse, ConverseStream and Titan Text Embeddings.

* ``POST {base_url}/model/{modelId}/converse`` (and ``/converse-stream``), the model id
  percent-encoded; translation rules in :mod:`services.workers.adapters.bedrock_mapping`.
* Every request is authenticated by :class:`~services.workers.adapters.aws_signing.AwsAuth`
  (SigV4 with the deployment's or the default chain's credentials, or a Bedrock API key).
* The stream is AWS's binary event stream (:mod:`services.workers.adapters.aws_eventstream`):
  ``messageStart`` -> the role chunk; ``contentBlockStart`` with ``toolUse`` -> a
  tool-call start; ``contentBlockDelta`` -> content or argument fragments;
  ``messageStop`` -> the finish reason; ``metadata`` (the last event) -> the finish
  chunk and the usage chunk. An ``exception`` frame (``throttlingException``,
  ``modelStreamErrorException``...) raises the matching gateway error; a stream that
  ends before ``metadata`` raises :class:`~services.runtime.errors.UpstreamProtocolError`.
* Embeddings: Titan Text Embeddings (V2) through ``POST /model/{modelId}/invoke`` with
  ``{"inputText", "dimensions"?, "normalize": true}``, one call per input (at most
  :data:`EMBED_CONCURRENCY` at a time), returned as an OpenAI embeddings list.
"""

from __future__ import annotations

import asyncio
import base64
import struct
from collections.abc import AsyncGenerator
from typing import Any, ClassVar, Final
from urllib.parse import quote

import orjson

from services.runtime.errors import InvalidRequest, UpstreamProtocolError
from services.workers import openai_shapes
from services.workers.adapters import bedrock_mapping as mapping
from services.workers.adapters.aws_eventstream import Frame, FrameReader, raw_chunks
from services.workers.adapters.aws_signing import AwsAuth
from services.workers.http import UpstreamHTTP
from services.workers.openai_shapes import ChunkBuilder
from services.workers.params import apply_policy
from services.workers.protocol import Completion, StreamEvent, UpstreamCall
from services.workers.registry import register
from services.workers.upstream_errors import translate_transport_errors

EMBED_PARAMS: Final = frozenset({"input", "dimensions", "encoding_format"})
EMBED_CONCURRENCY: Final = 16
_JSON: Final = "application/json"
_EVENTSTREAM: Final = "application/vnd.amazon.eventstream"


class StreamTranslator:
    """Bedrock ConverseStream events in, ``chat.completion.chunk`` events out."""

    def __init__(self, deployment: str, model: str) -> None:
        self._dep = deployment
        self.chunks = ChunkBuilder(model)
        self._started = False
        self._tools: dict[int, int] = {}
        """Bedrock content block index -> OpenAI tool-call index."""
        self._finish: str | None = None
        self.done = False

    def feed(self, frame: Frame) -> list[StreamEvent]:
        if frame.message_type != "event":
            message = str(frame.payload.get("message") or "no details")
            raise mapping.error_for_type(self._dep, frame.name, None, message)
        out: list[StreamEvent] = []
        if not self._started:
            self._started = True
            out.append(self.chunks.role())
        data = frame.payload
        if frame.name == "contentBlockStart":
            start = data.get("start")
            tool = start.get("toolUse") if isinstance(start, dict) else None
            if isinstance(tool, dict):
                index = len(self._tools)
                self._tools[self._block(data)] = index
                call_id = str(tool.get("toolUseId") or openai_shapes.new_call_id())
                out.append(self.chunks.tool_start(index, call_id, str(tool.get("name"))))
        elif frame.name == "contentBlockDelta":
            delta = data.get("delta")
            delta = delta if isinstance(delta, dict) else {}
            tool = delta.get("toolUse")
            if isinstance(delta.get("text"), str):
                out.append(self.chunks.content(delta["text"]))
            elif isinstance(tool, dict) and isinstance(tool.get("input"), str):
                tool_index = self._tools.get(self._block(data))
                if tool_index is None:
                    raise UpstreamProtocolError(
                        f"deployment {self._dep} sent tool input for a block it never started"
                    )
                out.append(self.chunks.tool_arguments(tool_index, tool["input"]))
        elif frame.name == "messageStop":
            self._finish = mapping.FINISH.get(str(data.get("stopReason")), "stop")
        elif frame.name == "metadata":
            if self._finish is None:
                raise UpstreamProtocolError(f"deployment {self._dep} sent metadata before stopping")
            out.append(self.chunks.finish(self._finish))
            out.append(self.chunks.usage(mapping.usage(self._dep, data.get("usage"))))
            self.done = True
        return out

    def _block(self, data: dict[str, Any]) -> int:
        index = data.get("contentBlockIndex")
        if not isinstance(index, int):
            raise UpstreamProtocolError(f"deployment {self._dep} sent no contentBlockIndex")
        return index


@register
class BedrockAdapter:
    name: ClassVar[str] = "bedrock"

    def __init__(self, http: UpstreamHTTP) -> None:
        self._http = http
        self._auth = AwsAuth("bedrock")

    async def complete(self, call: UpstreamCall) -> Completion:
        body = mapping.converse_request(call.body, call.deployment)
        data = await self._post(call, "converse", body)
        return mapping.completion(call.deployment.deployment, data, _model(call))

    async def stream(self, call: UpstreamCall) -> AsyncGenerator[StreamEvent, None]:
        dep = call.deployment.deployment
        raw = orjson.dumps(mapping.converse_request(call.body, call.deployment))
        url = self._url(call, "converse-stream")
        headers = await self._headers(call, url, raw, _EVENTSTREAM)
        translator = StreamTranslator(dep, _model(call))
        reader = FrameReader(dep)
        with translate_transport_errors(dep):
            async with self._http.stream(url, raw, headers) as response:
                if response.status >= 400:
                    body = await response.read()
                    raise mapping.http_error(dep, response.status, response.headers, body)
                async for data in raw_chunks(response):
                    if translator.done:
                        continue  # read to the end so the connection can be reused
                    for frame in reader.feed(data):
                        for event in translator.feed(frame):
                            yield event
        if not translator.done:
            raise UpstreamProtocolError(f"deployment {dep} ended the stream before finishing")

    async def embed(self, call: UpstreamCall) -> Completion:
        body = apply_policy(call.body, EMBED_PARAMS, call.deployment)
        inputs = _inputs(body.get("input"))
        fmt = body.get("encoding_format") or "float"
        if fmt not in ("float", "base64"):
            raise InvalidRequest(
                "'encoding_format' must be 'float' or 'base64'", param="encoding_format"
            )
        request: dict[str, Any] = {"normalize": True}
        if body.get("dimensions") is not None:
            request["dimensions"] = body["dimensions"]
        limit = asyncio.Semaphore(EMBED_CONCURRENCY)

        async def one(text: str) -> dict[str, Any]:
            async with limit:
                return await self._post(call, "invoke", {**request, "inputText": text})

        tasks = [asyncio.ensure_future(one(text)) for text in inputs]
        try:
            results = await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        return _embeddings(call.deployment.deployment, results, _model(call), fmt == "base64")

    async def _post(
        self, call: UpstreamCall, operation: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        dep = call.deployment.deployment
        raw = orjson.dumps(body)
        url = self._url(call, operation)
        headers = await self._headers(call, url, raw, _JSON)
        with translate_transport_errors(dep):
            reply = await self._http.post(url, raw, headers)
        if reply.status >= 400:
            raise mapping.http_error(dep, reply.status, reply.headers, reply.body)
        try:
            data = orjson.loads(reply.body)
        except orjson.JSONDecodeError:
            raise UpstreamProtocolError(f"deployment {dep} sent a body that is not JSON") from None
        if not isinstance(data, dict):
            raise UpstreamProtocolError(f"deployment {dep} sent JSON that is not an object")
        return data

    def _url(self, call: UpstreamCall, operation: str) -> str:
        model = quote(_model(call), safe="")
        return f"{call.deployment.base_url}/model/{model}/{operation}"

    async def _headers(
        self, call: UpstreamCall, url: str, body: bytes, accept: str
    ) -> dict[str, str]:
        headers = {"content-type": _JSON, "accept": accept}
        return await self._auth.headers(call.deployment, url, body, headers)


def _model(call: UpstreamCall) -> str:
    model = call.body.get("model")
    return model if isinstance(model, str) and model else call.deployment.model


def _inputs(raw: Any) -> list[str]:
    inputs = [raw] if isinstance(raw, str) else raw
    if not isinstance(inputs, list) or not inputs or not all(isinstance(i, str) for i in inputs):
        raise InvalidRequest(
            "'input' must be a non-empty string or array of strings for Bedrock", param="input"
        )
    return inputs


def _embeddings(dep: str, results: list[dict[str, Any]], model: str, as_base64: bool) -> Completion:
    data = []
    tokens = 0
    for index, result in enumerate(results):
        vector = result.get("embedding")
        count = result.get("inputTextTokenCount", 0)
        if not isinstance(vector, list) or not isinstance(count, int):
            raise UpstreamProtocolError(f"deployment {dep} answered without an embedding")
        tokens += count
        value: Any = vector
        if as_base64:
            value = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": value})
    totals = openai_shapes.usage(tokens, 0)
    response = {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return Completion(response=response, usage=totals, finish_reason=None)
