"""OpenAI and OpenAI-compatible servers: OpenAI, vLLM, llama.cpp server,
Together, Ollama's ``/v1``, and the IGW provider simulator.

The wire format is already the normalized one, so this adapter mostly checks
shapes, asks for usage in streams, and translates errors.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any, ClassVar

import orjson
from pydantic import ValidationError

from schemas.openai_chat import Usage
from services.runtime.errors import UpstreamProtocolError
from services.workers.http import UpstreamHTTP
from services.workers.parsing import parse_object
from services.workers.protocol import Completion, StreamEvent, UpstreamCall
from services.workers.registry import register
from services.workers.sse import read_events
from services.workers.upstream_errors import (
    error_from_response,
    error_from_stream_payload,
    translate_transport_errors,
)


@register
class OpenAICompatAdapter:
    name: ClassVar[str] = "openai"

    def __init__(self, http: UpstreamHTTP) -> None:
        self._http = http

    async def complete(self, call: UpstreamCall) -> Completion:
        dep = call.deployment.deployment
        with translate_transport_errors(dep):
            reply = await self._http.post(
                self._url(call), orjson.dumps(call.body), self._headers(call)
            )
        if reply.status >= 400:
            raise error_from_response(dep, reply.status, reply.headers, reply.body)
        data = parse_object(dep, reply.body)
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices:
            raise UpstreamProtocolError(f"deployment {dep} answered without choices")
        finish = choices[0].get("finish_reason") if isinstance(choices[0], dict) else None
        return Completion(
            response=data, usage=_usage(dep, data), finish_reason=finish, raw=reply.body
        )

    async def stream(self, call: UpstreamCall) -> AsyncGenerator[StreamEvent, None]:
        dep = call.deployment.deployment
        body = dict(call.body)
        body["stream"] = True
        body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        finished = done = False
        with translate_transport_errors(dep):
            async with self._http.stream(
                self._url(call), orjson.dumps(body), self._headers(call)
            ) as response:
                if response.status >= 400:
                    raw = await response.read()
                    raise error_from_response(dep, response.status, response.headers, raw)
                async for message in read_events(response.lines()):
                    if done:
                        continue  # read to the end so the connection can be reused
                    if message.data == "[DONE]":
                        done = True
                        continue
                    raw = message.data.encode()
                    chunk = parse_object(dep, raw)
                    if "error" in chunk:
                        raise error_from_stream_payload(dep, chunk)
                    event = _stream_event(dep, chunk, raw)
                    finished = finished or event.finish_reason is not None
                    yield event
        if not finished:
            raise UpstreamProtocolError(f"deployment {dep} ended the stream before finishing")

    async def embed(self, call: UpstreamCall) -> Completion:
        dep = call.deployment.deployment
        with translate_transport_errors(dep):
            reply = await self._http.post(
                self._url(call, "embeddings"), orjson.dumps(call.body), self._headers(call)
            )
        if reply.status >= 400:
            raise error_from_response(dep, reply.status, reply.headers, reply.body)
        data = parse_object(dep, reply.body)
        if not isinstance(data.get("data"), list):
            raise UpstreamProtocolError(f"deployment {dep} answered without data")
        return Completion(
            response=data, usage=_usage(dep, data), finish_reason=None, raw=reply.body
        )

    def _url(self, call: UpstreamCall, operation: str = "chat/completions") -> str:
        return f"{call.deployment.base_url}/{operation}"

    def _headers(self, call: UpstreamCall) -> dict[str, str]:
        headers = {"content-type": "application/json", "accept": "application/json"}
        if call.deployment.api_key is not None:
            headers["authorization"] = f"Bearer {call.deployment.api_key.get_secret_value()}"
        return headers


def _stream_event(dep: str, chunk: dict[str, Any], raw: bytes) -> StreamEvent:
    choices = chunk.get("choices")
    if not isinstance(choices, list):
        raise UpstreamProtocolError(f"deployment {dep} sent a chunk without choices")
    finish = None
    has_output = False
    for choice in choices:
        if not isinstance(choice, dict):
            raise UpstreamProtocolError(f"deployment {dep} sent a malformed choice")
        finish = finish or choice.get("finish_reason")
        delta = choice.get("delta") or {}
        has_output = has_output or bool(delta.get("content") or delta.get("tool_calls"))
    return StreamEvent(
        chunk=chunk, usage=_usage(dep, chunk), finish_reason=finish, has_output=has_output, raw=raw
    )


def _usage(dep: str, data: dict[str, Any]) -> Usage | None:
    raw = data.get("usage")
    if not raw:
        return None
    try:
        return Usage.model_validate(raw)
    except ValidationError:
        raise UpstreamProtocolError(f"deployment {dep} sent malformed usage") from None
