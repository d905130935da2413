"""One HTTP exchange of the simulator, below the dialects: reading the body,
answering JSON, waiting while watching for the client to leave, and dropping
the connection abruptly (the ``reset`` fault)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Awaitable, Callable, MutableMapping
from random import getrandbits
from typing import Any, Final

from services.simulator.dialect import Dialect, SimError
from services.simulator.dialects.openai import error_body

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

JSON_HEADER: Final = (b"content-type", b"application/json")
_LINGER_RESET: Final = struct.pack("ii", 1, 0)


class SimulatedReset(ConnectionResetError):
    """Raised inside the app to make the server drop the connection (fallback for ``reset``)."""


class ClientWatch:
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


def new_request_id() -> bytes:
    return f"req_{getrandbits(128):032x}".encode()


def as_seconds(ms: float | None) -> float | None:
    return None if ms is None else ms / 1000.0


async def read_body(receive: Receive) -> bytes | None:
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


async def send_json(
    send: Send, status: int, body: bytes, extra: tuple[tuple[bytes, bytes], ...] = ()
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                JSON_HEADER,
                (b"content-length", str(len(body)).encode()),
                (b"x-request-id", new_request_id()),
                *extra,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def send_sim_error(send: Send, dialect: Dialect, error: SimError) -> None:
    status, headers, body = dialect.error(error)
    await send_json(send, status, body, tuple(headers))


async def send_not_found(send: Send, method: str, path: str) -> None:
    body = error_body(f"Invalid URL ({method} {path})", "invalid_request_error", None, None)
    await send_json(send, 404, body)


async def abort(send: Send, client: ClientWatch) -> None:
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
