"""Graceful shutdown of the ingress: uvicorn's, plus what a gateway replica owes its clients.

On SIGTERM (or SIGINT) the replica drains:

* at once, it stops taking requests: ``/ready`` answers 503 and a request arriving
  on a connection that is already open gets a 503 ``service_unavailable`` error
  (``Connection: close``), so load balancers and clients move to another replica;
* after ``server.drain_delay_s`` (default 0: at once) uvicorn closes the listener,
  so new connections are refused, and waits for the open ones;
* requests and SSE streams in flight run to their end; those still running
  ``server.shutdown_grace_s`` after the signal end with a 503 error (on a stream,
  an ``{"error": ...}`` event, never a silent cut) and the worker is told to stop;
* then the lifespan drains the NATS connection and the process exits.

Contract: the ingress never ends an accepted stream without ``[DONE]`` or an
error event, short of being killed.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import time
from types import FrameType
from typing import Final

import uvicorn

from services.ingress.fastpath import FastPath
from services.runtime.errors import ServiceUnavailable
from services.runtime.settings import ServerSettings

log = logging.getLogger("igw.ingress")

CLOSE_MARGIN_S: Final = 2.0
"""uvicorn cuts what is still open this long after the late streams were ended with an error."""

SHUTTING_DOWN: Final = ServiceUnavailable(
    "this gateway replica shut down before the answer was complete; retry the request",
    code="shutting_down",
)


class DrainingServer(uvicorn.Server):
    """A uvicorn server that drains ``app`` on the first exit signal (see the module docstring)."""

    def __init__(self, config: uvicorn.Config, app: FastPath, settings: ServerSettings) -> None:
        super().__init__(config)
        self._app = app
        self._settings = settings
        self._loop: asyncio.AbstractEventLoop | None = None
        self._close_at: float | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """Called from the signal handler: only flags are set here; the rest runs on the loop."""
        if self._close_at is None:
            self._close_at = time.monotonic() + self._settings.drain_delay_s
            self._app.draining = True
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self._drain)
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        should_exit = await super().on_tick(counter)
        if should_exit and not self.force_exit and self._close_at is not None:
            return time.monotonic() >= self._close_at  # keep listening through the drain delay
        return should_exit

    def _drain(self) -> None:
        ctx = self._app.context
        grace = self._settings.shutdown_grace_s
        if ctx is None:
            return  # still starting: nothing is in flight
        ctx.draining = True
        log.info(
            "shutting down: %d requests in flight get up to %.0fs to finish",
            ctx.mux.in_flight,
            grace,
        )
        assert self._loop is not None
        self._loop.call_later(grace, ctx.mux.abort_all, SHUTTING_DOWN)


def uvicorn_grace_s(settings: ServerSettings) -> int:
    """uvicorn's own graceful timeout, counted from when it closes the listener."""
    return math.ceil(max(settings.shutdown_grace_s - settings.drain_delay_s, 0) + CLOSE_MARGIN_S)
