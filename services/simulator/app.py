"""The simulator's raw ASGI application (no framework on the hot path).

Routes:

* each dialect's routes (:mod:`services.simulator.dialects`): OpenAI
  ``/v1/chat/completions`` and ``/v1/embeddings``, Azure OpenAI deployments,
  Anthropic ``/v1/messages``, Gemini ``:generateContent``/``:streamGenerateContent``,
  Bedrock ``/model/{id}/converse(-stream)``, Ollama ``/api/chat``/``/api/embed``;
* ``GET /v1/models`` (and ``/v1/models/sim``): OpenAI list shape, one model ``sim``;
* ``GET /_sim/stats``: counters as JSON (see :mod:`services.simulator.stats`);
* ``GET /_sim/wait?counter=disconnects&value=1&timeout=5``: long-poll until the counter
  reaches the value; 200 with the stats, or 408 with the stats on timeout;
* ``POST /_sim/reset``: zero the counters;
* anything else: 404 in OpenAI's error shape.

The engine (:mod:`services.simulator.engine`) decides what to answer; the matched
dialect parses the request and renders the answer, stream and errors.

Timing: in non-stream mode ``ttft_ms`` delays the response headers; in stream mode the
headers go out at once and ``ttft_ms`` delays the first chunk, ``itl_ms`` separates
token chunks. HTTP-error faults are answered after ``ttft_ms`` too. A ``stall`` that
ends because ``stall_ms`` elapsed continues with the normal response.

``reset`` aborts the TCP connection (with ``SO_LINGER`` 0, so the peer sees a reset) through
the server's transport when it is reachable (uvicorn); otherwise it raises inside the app after
the response started, which makes uvicorn drop the connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from typing import Final
from urllib.parse import parse_qsl, unquote

import orjson

from services.simulator.behaviour import ERROR_FAULTS, Behaviour, BehaviourError, parse_behaviour
from services.simulator.dialect import (
    FAULT_KINDS,
    Answer,
    Call,
    Dialect,
    EmbedRequest,
    SimError,
    SimRequest,
    StreamEncoder,
)
from services.simulator.dialects import DIALECTS
from services.simulator.dialects.openai import error_body
from services.simulator.engine import DEFAULT_EMBED_DIMENSIONS, embed_vector, plan, text_tokens
from services.simulator.exchange import (
    JSON_HEADER,
    ClientWatch,
    Receive,
    Scope,
    Send,
    SimulatedReset,
    abort,
    as_seconds,
    new_request_id,
    read_body,
    send_json,
    send_not_found,
    send_sim_error,
)
from services.simulator.stats import Stats

_NO_CACHE: Final = (b"cache-control", b"no-cache")
_STREAM_FAULTS: Final = frozenset({"cut", "reset", "malformed", "stall"})
_MAX_WAIT_S: Final = 300.0
MALFORMED_BODY: Final = b"{not json"
_BAD_JSON: Final = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
    "using your HTTP library correctly. The API expects a JSON payload, but what was "
    "sent was not valid JSON.)"
)
_FAULT_MESSAGES: Final = {
    "invalid_request": "Invalid request (simulated fault).",
    "authentication": "Incorrect API key provided (simulated fault).",
    "permission": "Your key may not use this model (simulated fault).",
    "not_found": "The model does not exist or you do not have access to it (simulated fault).",
    "request_too_large": "Request exceeds the maximum allowed size (simulated fault).",
    "rate_limit": "Rate limit reached for requests (simulated fault). Please try again later.",
    "api_error": "The server had an error while processing your request (simulated fault).",
    "unavailable": "The service is temporarily unavailable (simulated fault).",
    "overloaded": "Overloaded (simulated fault).",
}


MODEL_CREATED: Final = 1_700_000_000
_MODEL: Final = {
    "id": "sim",
    "object": "model",
    "created": MODEL_CREATED,
    "owned_by": "igw-simulator",
}


def _match(method: str, path: str) -> tuple[Dialect, Call] | None:
    for dialect in DIALECTS:
        for route in dialect.routes:
            if route.method != method:
                continue
            found = route.pattern.fullmatch(path)
            if found is not None:
                params = {k: unquote(v) for k, v in found.groupdict().items() if v is not None}
                return dialect, Call(route=route, params=params, query={}, headers={})
    return None


CONTEXT_MESSAGE: Final = (
    "This model's maximum context length is 8192 tokens. However, your messages resulted "
    "in 9000 tokens. Please reduce the length of the messages. (simulated fault)"
)


CONTENT_MESSAGE: Final = (
    "The response was filtered due to the prompt triggering the content management "
    "policy. Please modify your prompt and retry. (simulated fault)"
)


def _fault_error(behaviour: Behaviour) -> SimError:
    if behaviour.fault == "context":
        return SimError(400, CONTEXT_MESSAGE, code="context_length_exceeded", param="messages")
    if behaviour.fault == "content_filter":
        return SimError(400, CONTENT_MESSAGE, code="content_filter", param="prompt")
    kind = FAULT_KINDS[behaviour.fault]
    retry_after = behaviour.retry_after if behaviour.fault == "429" else None
    return SimError(int(behaviour.fault), _FAULT_MESSAGES[kind], kind, retry_after=retry_after)


class SimulatorApp:
    """ASGI callable. Each instance owns its :class:`Stats` (``app.stats``)."""

    def __init__(self) -> None:
        self.stats = Stats()
        self._fault_counts: dict[str, int] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            path: str = scope["path"]
            method: str = scope["method"]
            matched = _match(
                method, (scope.get("raw_path") or b"").decode("latin-1").split("?")[0] or path
            )
            if matched is not None:
                dialect, call = matched
                query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
                headers = {
                    k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]
                }
                call = Call(route=call.route, params=call.params, query=query, headers=headers)
                if call.route.operation == "embed":
                    await self._embed(dialect, call, receive, send)
                else:
                    await self._chat(dialect, call, scope, receive, send)
            elif method == "GET" and path in ("/v1/models", "/models"):
                await send_json(send, 200, orjson.dumps({"object": "list", "data": [_MODEL]}))
            elif method == "GET" and path in ("/v1/models/sim", "/models/sim"):
                await send_json(send, 200, orjson.dumps(_MODEL))
            elif method == "GET" and path == "/_sim/stats":
                await send_json(send, 200, orjson.dumps(self.stats.snapshot()))
            elif method == "GET" and path == "/_sim/wait":
                await self._wait(scope, receive, send)
            elif method == "POST" and path == "/_sim/reset":
                self.stats.reset()
                self._fault_counts.clear()
                await send_json(send, 200, orjson.dumps(self.stats.snapshot()))
            else:
                await send_not_found(send, method, path)
        elif kind == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    # -- /_sim/wait --------------------------------------------------------------------------

    async def _wait(self, scope: Scope, receive: Receive, send: Send) -> None:
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        counter = query.get("counter", "")
        try:
            self.stats.get(counter)
        except KeyError:
            body = error_body(
                f"Unknown counter {counter!r}", "invalid_request_error", "counter", None
            )
            await send_json(send, 400, body)
            return
        try:
            value = int(query.get("value", "1"))
            timeout = min(float(query.get("timeout", "5")), _MAX_WAIT_S)
        except ValueError:
            body = error_body("Invalid 'value' or 'timeout'", "invalid_request_error", None, None)
            await send_json(send, 400, body)
            return
        client = ClientWatch(receive)
        waiter = asyncio.ensure_future(self.stats.wait_for(counter, value, timeout))
        try:
            watcher = client.watcher()
            await asyncio.wait((waiter, watcher), return_when=asyncio.FIRST_COMPLETED)
            if not waiter.done():
                return  # the client went away
            reached = waiter.result()
        finally:
            waiter.cancel()
            client.close()
        await send_json(send, 200 if reached else 408, orjson.dumps(self.stats.snapshot()))

    def _transient(self, behaviour: Behaviour) -> Behaviour:
        """``fault_times=N``: the fault applies to the first N requests of this model string."""
        if behaviour.fault_times is None or behaviour.fault == "none":
            return behaviour
        key = repr(behaviour)
        seen = self._fault_counts.get(key, 0) + 1
        self._fault_counts[key] = seen
        return behaviour if seen <= behaviour.fault_times else replace(behaviour, fault="none")

    # -- embeddings ----------------------------------------------------------------------------

    async def _embed(self, dialect: Dialect, call: Call, receive: Receive, send: Send) -> None:
        raw = await read_body(receive)
        if raw is None:
            return
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError:
            await send_sim_error(send, dialect, SimError(400, _BAD_JSON))
            return
        self.stats.last_request = payload
        self.stats.record_headers(list(_raw_headers(call)))
        try:
            request: EmbedRequest = dialect.parse_embed(call, payload)
            behaviour = parse_behaviour(request.model, request.header_behaviour)
        except BehaviourError as exc:
            error = SimError(400, exc.message, param=exc.key, code="invalid_sim_behaviour")
            await send_sim_error(send, dialect, error)
            return
        except SimError as exc:
            await send_sim_error(send, dialect, exc)
            return
        if behaviour.fault in ERROR_FAULTS:
            self.stats.fault(behaviour.fault)
            await send_sim_error(send, dialect, _fault_error(behaviour))
            return
        dimensions = request.dimensions or DEFAULT_EMBED_DIMENSIONS
        vectors = [embed_vector(text, dimensions) for text in request.inputs]
        tokens = sum(text_tokens(text) for text in request.inputs)
        await send_json(send, 200, dialect.embed_response(call, request, vectors, tokens))

    # -- chat ----------------------------------------------------------------------------------

    async def _chat(
        self, dialect: Dialect, call: Call, scope: Scope, receive: Receive, send: Send
    ) -> None:
        stats = self.stats
        stats.begin()
        client = ClientWatch(receive)
        disconnected = False
        try:
            disconnected = await self._chat_exchange(dialect, call, scope, receive, send, client)
        except asyncio.CancelledError:  # server shutdown: the exchange did not finish
            disconnected = True
            raise
        finally:
            client.close()
            stats.end(disconnected=disconnected)

    async def _chat_exchange(
        self,
        dialect: Dialect,
        call: Call,
        scope: Scope,
        receive: Receive,
        send: Send,
        client: ClientWatch,
    ) -> bool:
        """Answer one chat request. Returns True if the client disconnected first."""
        stats = self.stats
        raw = await read_body(receive)
        if raw is None:
            return True
        stats.record_headers(scope["headers"])
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError:
            await send_sim_error(send, dialect, SimError(400, _BAD_JSON))
            return False
        stats.last_request = payload
        try:
            request = dialect.parse_chat(call, payload)
            behaviour = self._transient(parse_behaviour(request.model, request.header_behaviour))
            if behaviour.fault not in ERROR_FAULTS:
                answer = plan(request, behaviour)
        except BehaviourError as exc:
            error = SimError(400, exc.message, param=exc.key, code="invalid_sim_behaviour")
            await send_sim_error(send, dialect, error)
            return False
        except SimError as exc:
            await send_sim_error(send, dialect, exc)
            return False

        fault = behaviour.fault
        if fault in ERROR_FAULTS:
            if behaviour.ttft_ms > 0 and await client.pause(behaviour.ttft_ms / 1000.0):
                return True
            stats.fault(fault)
            await send_sim_error(send, dialect, _fault_error(behaviour))
            return False

        if fault == "stall" and behaviour.fault_after is None:
            stats.fault("stall")
            if await client.pause(as_seconds(behaviour.stall_ms)):
                return True
        stream = request.stream or call.route.operation == "stream"
        if stream:
            encoder = dialect.stream_encoder(call, request, answer)
            return await self._stream(send, client, encoder, answer, behaviour)
        body = dialect.complete(call, request, answer)
        return await self._complete(send, client, body, behaviour)

    async def _complete(
        self, send: Send, client: ClientWatch, body: bytes, behaviour: Behaviour
    ) -> bool:
        stats = self.stats
        fault = behaviour.fault
        if behaviour.ttft_ms > 0 and await client.pause(behaviour.ttft_ms / 1000.0):
            return True
        if fault == "reset":
            stats.fault("reset")
            await abort(send, client)
            return False
        if fault == "stall":  # with fault_after: headers go out, the body stalls
            stats.fault("stall")
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [JSON_HEADER, (b"x-request-id", new_request_id())],
                }
            )
            if await client.pause(as_seconds(behaviour.stall_ms)):
                return True
            await send({"type": "http.response.body", "body": body})
            return False
        if fault == "cut":
            stats.fault("cut")
            body = body[: len(body) // 2]
        elif fault == "malformed":
            stats.fault("malformed")
            body = MALFORMED_BODY
        await send_json(send, 200, body)
        return False

    async def _stream(
        self,
        send: Send,
        client: ClientWatch,
        encoder: StreamEncoder,
        answer: Answer,
        behaviour: Behaviour,
    ) -> bool:
        stats = self.stats
        fault = behaviour.fault
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", encoder.content_type),
                    _NO_CACHE,
                    (b"x-request-id", new_request_id()),
                ],
            }
        )
        if behaviour.ttft_ms > 0 and await client.pause(behaviour.ttft_ms / 1000.0):
            return True

        pieces = answer.pieces
        buffer = [encoder.start()]
        frame: Callable[[str], bytes] = encoder.text
        if answer.tool_call is not None:
            buffer.append(encoder.tool_start(answer.tool_call))
            frame = encoder.tool_arguments

        fault_at = -1
        if fault in _STREAM_FAULTS and not (fault == "stall" and behaviour.fault_after is None):
            fault_at = min(behaviour.stream_fault_after, len(pieces))
        itl = behaviour.itl_ms / 1000.0

        async def flush() -> None:
            await send({"type": "http.response.body", "body": b"".join(buffer), "more_body": True})
            buffer.clear()

        for index in range(len(pieces) + 1):
            if index == fault_at:
                stats.fault(fault)
                if fault == "cut":
                    await send({"type": "http.response.body", "body": b"".join(buffer)})
                    return False
                if fault == "malformed":
                    buffer.append(encoder.malformed())
                else:
                    await flush()
                    if fault == "reset":
                        await abort(send, client)
                        return False
                    if await client.pause(as_seconds(behaviour.stall_ms)):  # stall
                        return True
            if index == len(pieces):
                break
            if index and itl > 0:
                await flush()
                if await client.pause(itl):
                    return True
            buffer.append(frame(pieces[index]))

        buffer.append(encoder.finish())
        await send({"type": "http.response.body", "body": b"".join(buffer)})
        return False


def _raw_headers(call: Call) -> list[tuple[bytes, bytes]]:
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in call.headers.items()]


def create_app() -> SimulatorApp:
    """A fresh simulator app with its own counters (``app.stats``)."""
    return SimulatorApp()


__all__ = ["SimRequest", "SimulatedReset", "SimulatorApp", "create_app"]
