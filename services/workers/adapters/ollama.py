"""Ollama's native API: ``POST {base_url}/api/chat`` and ``POST {base_url}/api/embed``.

(Ollama's OpenAI-compatible ``/v1`` is served by the ``openai`` adapter.) No auth
by default; ``Authorization: Bearer <api_key>`` when the deployment has a key
(Ollama behind a proxy, or Ollama's cloud). The translation rules live in
:mod:`services.workers.adapters.ollama_mapping`.

Streams are NDJSON (``application/x-ndjson``): one JSON object per line, the last
with ``done: true`` and the token counts. A line ``{"error": "..."}`` is an
:class:`~services.runtime.errors.UpstreamError`; a stream that ends without the
``done`` line, or a line that is not a JSON object, is an
:class:`~services.runtime.errors.UpstreamProtocolError`. Error answers are
``{"error": "<message>"}`` with an HTTP status, mapped by status (400, 401/403,
413, 429 with ``retry-after``, 500, 503 ``server busy``); Ollama's 404 ``model "x"
not found, try pulling it first`` is the deployment's misconfiguration, an
:class:`~services.runtime.errors.UpstreamError` with code ``upstream_model_not_found``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any, ClassVar

import orjson

from services.runtime.errors import UpstreamProtocolError
from services.workers.adapters import ollama_mapping as mapping
from services.workers.http import UpstreamHTTP
from services.workers.protocol import Completion, StreamEvent, UpstreamCall
from services.workers.registry import register
from services.workers.upstream_errors import error_from_stream_payload, translate_transport_errors


@register
class OllamaAdapter:
    name: ClassVar[str] = "ollama"

    def __init__(self, http: UpstreamHTTP) -> None:
        self._http = http

    async def complete(self, call: UpstreamCall) -> Completion:
        dep = call.deployment.deployment
        body = mapping.chat_request(call.body, call.deployment, stream=False)
        data = await self._post(call, "api/chat", body)
        return mapping.completion(dep, data, body["model"])

    async def stream(self, call: UpstreamCall) -> AsyncGenerator[StreamEvent, None]:
        dep = call.deployment.deployment
        body = mapping.chat_request(call.body, call.deployment, stream=True)
        translator = mapping.StreamTranslator(dep, body["model"])
        with translate_transport_errors(dep):
            async with self._http.stream(
                self._url(call, "api/chat"),
                orjson.dumps(body),
                self._headers(call, "application/x-ndjson"),
            ) as response:
                if response.status >= 400:
                    raw = await response.read()
                    raise mapping.http_error(dep, response.status, response.headers, raw)
                async for line in response.lines():
                    if translator.done or not line.strip():
                        continue  # read to the end so the connection can be reused
                    data = _parse_object(dep, line.encode())
                    if "error" in data:
                        raise error_from_stream_payload(dep, data)
                    for event in translator.feed(data):
                        yield event
        if not translator.done:
            raise UpstreamProtocolError(f"deployment {dep} ended the stream before finishing")

    async def embed(self, call: UpstreamCall) -> Completion:
        dep = call.deployment.deployment
        body = mapping.embed_request(call.body, call.deployment)
        data = await self._post(call, "api/embed", body)
        return mapping.embeddings(dep, data, call.body)

    async def _post(self, call: UpstreamCall, path: str, body: dict[str, Any]) -> dict[str, Any]:
        dep = call.deployment.deployment
        with translate_transport_errors(dep):
            reply = await self._http.post(
                self._url(call, path), orjson.dumps(body), self._headers(call, "application/json")
            )
        if reply.status >= 400:
            raise mapping.http_error(dep, reply.status, reply.headers, reply.body)
        data = _parse_object(dep, reply.body)
        if "error" in data:
            raise error_from_stream_payload(dep, data)
        return data

    def _url(self, call: UpstreamCall, path: str) -> str:
        return f"{call.deployment.base_url}/{path}"

    def _headers(self, call: UpstreamCall, accept: str) -> dict[str, str]:
        headers = {"content-type": "application/json", "accept": accept}
        if call.deployment.api_key is not None:
            headers["authorization"] = f"Bearer {call.deployment.api_key.get_secret_value()}"
        return headers


def _parse_object(dep: str, raw: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise UpstreamProtocolError(f"deployment {dep} sent a line that is not JSON") from None
    if not isinstance(data, dict):
        raise UpstreamProtocolError(f"deployment {dep} sent JSON that is not an object")
    return data
