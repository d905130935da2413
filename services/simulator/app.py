"""The simulator's raw ASGI application (no framework on the hot path).

Routes:

* ``POST /v1/chat/completions`` (also ``/chat/completions``): the simulated provider.
* ``GET /v1/models`` (and ``/v1/models/sim``): OpenAI list shape, one model ``sim``.
* ``GET /_sim/stats``: counters as JSON (see :mod:`services.simulator.stats`).
* ``GET /_sim/wait?counter=disconnects&value=1&timeout=5``: long-poll until the counter
  reaches the value; 200 with the stats, or 408 with the stats on timeout.
* ``POST /_sim/reset``: zero the counters.
* anything else: 404 in OpenAI's error shape.

Timing: in non-stream mode ``ttft_ms`` delays the response headers; in stream mode the
headers go out at once and ``ttft_ms`` delays the first chunk (role + first token), ``itl_ms``
separates token chunks. HTTP-error faults are answered after ``ttft_ms`` too. A ``stall``
that ends because ``stall_ms`` elapsed continues with the normal response.

``reset`` aborts the TCP connection (with ``SO_LINGER`` 0, so the peer sees a reset) through
the server's transport when it is reachable (uvicorn); otherwise it raises inside the app after
the response started, which makes uvicorn drop the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final
from urllib.parse import parse_qsl

import orjson

from services.simulator.behaviour import ERROR_FAULTS, Behaviour, BehaviourError, parse_behaviour
from services.simulator.errors import OpenAIError
from services.simulator.openai_dialect import (
    DONE,
    MALFORMED_BODY,
    MALFORMED_FRAME,
    ChunkEncoder,
    chat_completion,
    completion_text,
    fault_error,
    format_seconds,
    model_object,
    models_list,
    new_request_id,
    token_text,
)
from services.simulator.request import ChatRequest, estimate_prompt_tokens, parse_chat_request
from services.simulator.stats import Stats
from services.simulator.tools import ToolCall, choose_tool_call, split_arguments

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_JSON: Final = (b"content-type", b"application/json")
_SSE: Final = (b"content-type", b"text/event-stream; charset=utf-8")
_NO_CACHE: Final = (b"cache-control", b"no-cache")
_BEHAVIOUR_HEADERS: Final = (b"x-sim-behavior", b"x-sim-behaviour")
_STREAM_FAULTS: Final = frozenset({"cut", "reset", "malformed", "stall"})
_LINGER_RESET: Final = struct.pack("ii", 1, 0)
_MAX_WAIT_S: Final = 300.0
_BAD_JSON: Final = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
    "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was "
    "sent was not valid JSON.)"
)


class SimulatedReset(ConnectionResetError):
    """Raised inside the app to make the server drop the connection (fallback for ``reset``)."""


class _Client:
    """The client side of one exchange: waits that end early when the client disconnects.

    Disconnects are seen by a task reading ``receive`` (started lazily, only when the
    exchange has to wait), which returns once the server reports ``http.disconnect``.
    """

    __slots__ = ("_receive", "_watcher")

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._watcher: asyncio.Task[None] | None = None

    async def _watch(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass

    def watcher(self) -> asyncio.Task[None]:
        """The task that completes when the client disconnects (started on first use)."""
        if self._watcher is None:
            self._watcher = asyncio.ensure_future(self._watch())
        return self._watcher

    def gone(self) -> bool:
        return self._watcher is not None and self._watcher.done()

    async def pause(self, seconds: float | None) -> bool:
        """Wait ``seconds`` (None: forever). True if the client disconnected meanwhile."""
        if seconds is not None and seconds <= 0:
            return self.gone()
        task = self.watcher()
        if task.done():
            return True
        done, _ = await asyncio.wait((task,), timeout=seconds)
        return bool(done)

    def close(self) -> None:
        if self._watcher is not None and not self._watcher.done():
            self._watcher.cancel()


def _seconds(ms: float | None) -> float | None:
    return None if ms is None else ms / 1000.0


def _behaviour_header(raw_headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in raw_headers:
        if len(name) in (14, 15) and name.lower() in _BEHAVIOUR_HEADERS:
            return value.decode("latin-1")
    return None


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body, or None if the client disconnected first."""
    message = await receive()
    if message["type"] == "http.disconnect":
        return None
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        return body
    parts = [body]
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(parts)


async def _send_json(
    send: Send, status: int, body: bytes, extra: tuple[tuple[bytes, bytes], ...] = ()
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                _JSON,
                (b"content-length", str(len(body)).encode()),
                (b"x-request-id", new_request_id()),
                *extra,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _send_error(send: Send, error: OpenAIError) -> None:
    await _send_json(send, error.status, error.body())


async def _abort(send: Send, client: _Client) -> None:
    """Drop the connection abruptly (see the module docstring)."""
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    abort = getattr(transport, "abort", None)
    if transport is None or abort is None:
        raise SimulatedReset("simulated connection reset")
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    abort()
    # Let the server notice the lost connection so it does not answer a 500 itself.
    await client.pause(1.0)


class SimulatorApp:
    """ASGI callable. Each instance owns its :class:`Stats` (``app.stats``)."""

    def __init__(self) -> None:
        self.stats = Stats()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            path: str = scope["path"]
            method: str = scope["method"]
            if method == "POST" and path in ("/v1/chat/completions", "/chat/completions"):
                await self._chat(scope, receive, send)
            elif method == "GET" and path in ("/v1/models", "/models"):
                await _send_json(send, 200, models_list())
            elif method == "GET" and path in ("/v1/models/sim", "/models/sim"):
                await _send_json(send, 200, orjson.dumps(model_object("sim")))
            elif method == "GET" and path == "/_sim/stats":
                await _send_json(send, 200, orjson.dumps(self.stats.snapshot()))
            elif method == "GET" and path == "/_sim/wait":
                await self._wait(scope, receive, send)
            elif method == "POST" and path == "/_sim/reset":
                self.stats.reset()
                await _send_json(send, 200, orjson.dumps(self.stats.snapshot()))
            else:
                await _send_error(send, OpenAIError(404, f"Invalid URL ({method} {path})"))
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
            await _send_error(
                send,
                OpenAIError(400, f"Unknown counter {counter!r}", param="counter"),
            )
            return
        try:
            value = int(query.get("value", "1"))
            timeout = min(float(query.get("timeout", "5")), _MAX_WAIT_S)
        except ValueError:
            await _send_error(send, OpenAIError(400, "Invalid 'value' or 'timeout'"))
            return
        client = _Client(receive)
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
        await _send_json(send, 200 if reached else 408, orjson.dumps(self.stats.snapshot()))

    # -- /v1/chat/completions ------------------------------------------------------------------

    async def _chat(self, scope: Scope, receive: Receive, send: Send) -> None:
        stats = self.stats
        stats.begin()
        client = _Client(receive)
        disconnected = False
        try:
            disconnected = await self._chat_exchange(scope, receive, send, client)
        except asyncio.CancelledError:  # server shutdown: the exchange did not finish
            disconnected = True
            raise
        finally:
            client.close()
            stats.end(disconnected=disconnected)

    async def _chat_exchange(
        self, scope: Scope, receive: Receive, send: Send, client: _Client
    ) -> bool:
        """Answer one chat completion. Returns True if the client disconnected first."""
        stats = self.stats
        raw = await _read_body(receive)
        if raw is None:
            return True
        raw_headers: list[tuple[bytes, bytes]] = scope["headers"]
        stats.record_headers(raw_headers)
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError:
            await _send_error(send, OpenAIError(400, _BAD_JSON))
            return False
        stats.last_request = payload
        try:
            request = parse_chat_request(payload)
            behaviour = parse_behaviour(request.model, _behaviour_header(raw_headers))
            tool_call = choose_tool_call(request, behaviour.tool_call)
        except BehaviourError as exc:
            await _send_error(
                send, OpenAIError(400, exc.message, param=exc.key, code="invalid_sim_behaviour")
            )
            return False
        except OpenAIError as exc:
            await _send_error(send, exc)
            return False

        fault = behaviour.fault
        if fault in ERROR_FAULTS:
            if behaviour.ttft_ms > 0 and await client.pause(behaviour.ttft_ms / 1000.0):
                return True
            stats.fault(fault)
            error = fault_error(fault, behaviour.retry_after)
            extra: tuple[tuple[bytes, bytes], ...] = ()
            if fault == "429":
                extra = (
                    (b"retry-after", format_seconds(behaviour.retry_after).encode()),
                    (b"x-ratelimit-limit-requests", b"60"),
                    (b"x-ratelimit-remaining-requests", b"0"),
                    (b"x-ratelimit-reset-requests", f"{behaviour.retry_after:g}s".encode()),
                )
            await _send_json(send, error.status, error.body(), extra)
            return False

        if fault == "stall" and behaviour.fault_after is None:
            stats.fault("stall")
            if await client.pause(_seconds(behaviour.stall_ms)):
                return True
        if request.stream:
            return await self._stream(send, client, request, behaviour, tool_call)
        return await self._complete(send, client, request, behaviour, tool_call)

    async def _complete(
        self,
        send: Send,
        client: _Client,
        request: ChatRequest,
        behaviour: Behaviour,
        tool_call: ToolCall | None,
    ) -> bool:
        stats = self.stats
        fault = behaviour.fault
        if behaviour.ttft_ms > 0 and await client.pause(behaviour.ttft_ms / 1000.0):
            return True
        if fault == "reset":
            stats.fault("reset")
            await _abort(send, client)
            return False

        prompt_tokens = estimate_prompt_tokens(request.messages)
        if tool_call is not None:
            body = chat_completion(
                model=behaviour.model,
                content=None,
                finish_reason="tool_calls",
                prompt_tokens=prompt_tokens,
                completion_tokens=tool_call.completion_tokens,
                tool_call=tool_call,
            )
        else:
            tokens = behaviour.tokens
            capped = request.max_tokens is not None and tokens > request.max_tokens
            if capped and request.max_tokens is not None:
                tokens = request.max_tokens
            body = chat_completion(
                model=behaviour.model,
                content=completion_text(tokens),
                finish_reason="length" if capped else "stop",
                prompt_tokens=prompt_tokens,
                completion_tokens=tokens,
            )

        if fault == "stall":  # with fault_after: headers go out, the body stalls
            stats.fault("stall")
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [_JSON, (b"x-request-id", new_request_id())],
                }
            )
            if await client.pause(_seconds(behaviour.stall_ms)):
                return True
            await send({"type": "http.response.body", "body": body})
            return False
        if fault == "cut":
            stats.fault("cut")
            body = body[: len(body) // 2]
        elif fault == "malformed":
            stats.fault("malformed")
            body = MALFORMED_BODY
        await _send_json(send, 200, body)
        return False

    async def _stream(
        self,
        send: Send,
        client: _Client,
        request: ChatRequest,
        behaviour: Behaviour,
        tool_call: ToolCall | None,
    ) -> bool:
        stats = self.stats
        fault = behaviour.fault
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [_SSE, _NO_CACHE, (b"x-request-id", new_request_id())],
            }
        )
        if behaviour.ttft_ms > 0 and await client.pause(behaviour.ttft_ms / 1000.0):
            return True

        encoder = ChunkEncoder(behaviour.model, request.include_usage)
        frame: Callable[[str], bytes]
        if tool_call is not None:
            first = encoder.tool_call_start(tool_call)
            pieces = split_arguments(tool_call.arguments)
            frame = encoder.tool_arguments
            finish_reason = "tool_calls"
            completion_tokens = tool_call.completion_tokens
        else:
            tokens = behaviour.tokens
            capped = request.max_tokens is not None and tokens > request.max_tokens
            if capped and request.max_tokens is not None:
                tokens = request.max_tokens
            first = encoder.role()
            pieces = [token_text(i) for i in range(tokens)]
            frame = encoder.content
            finish_reason = "length" if capped else "stop"
            completion_tokens = tokens

        fault_at = -1
        if fault in _STREAM_FAULTS and not (fault == "stall" and behaviour.fault_after is None):
            fault_at = min(behaviour.stream_fault_after, len(pieces))
        itl = behaviour.itl_ms / 1000.0
        buffer = [first]

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
                    buffer.append(MALFORMED_FRAME)
                else:
                    await flush()
                    if fault == "reset":
                        await _abort(send, client)
                        return False
                    if await client.pause(_seconds(behaviour.stall_ms)):  # stall
                        return True
            if index == len(pieces):
                break
            if index and itl > 0:
                await flush()
                if await client.pause(itl):
                    return True
            buffer.append(frame(pieces[index]))

        buffer.append(encoder.finish(finish_reason))
        if request.include_usage:
            buffer.append(
                encoder.usage(estimate_prompt_tokens(request.messages), completion_tokens)
            )
        buffer.append(DONE)
        await send({"type": "http.response.body", "body": b"".join(buffer)})
        return False


def create_app() -> SimulatorApp:
    """A fresh simulator app with its own counters (``app.stats``)."""
    return SimulatorApp()


__all__ = ["SimulatedReset", "SimulatorApp", "create_app"]
