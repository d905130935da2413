"""Running the simulator on uvicorn (uvloop + httptools, no access log)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Generator
from typing import Any

import uvicorn

from services.simulator.app import SimulatorApp, create_app


class _Server(uvicorn.Server):
    """uvicorn server that reports readiness and, when embedded, leaves signals alone."""

    def __init__(
        self, config: uvicorn.Config, ready: asyncio.Event | None, handle_signals: bool
    ) -> None:
        super().__init__(config)
        self._ready = ready
        self._handle_signals = handle_signals

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and self._ready is not None:
            self._ready.set()

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        if self._handle_signals:
            with super().capture_signals():
                yield
        else:
            yield


def _config(app: SimulatorApp, host: str, port: int, **extra: Any) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        ws="none",
        lifespan="off",
        access_log=False,
        log_level="warning",
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=1,
        **extra,
    )


def bind_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A TCP socket bound to ``host:port`` (port 0 picks a free port: ``getsockname()[1]``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


async def serve(
    host: str = "127.0.0.1",
    port: int = 8090,
    ready: asyncio.Event | None = None,
    *,
    app: SimulatorApp | None = None,
    sock: socket.socket | None = None,
) -> None:
    """Serve the simulator in the running event loop until cancelled (or ``should_exit``).

    ``ready`` is set once the server listens. ``app`` lets the caller keep a handle on the
    instance (and its ``stats``); ``sock`` serves on an already-bound socket (e.g. port 0).
    Signal handlers and the logging configuration of the host process are left untouched.
    On cancellation the server shuts down gracefully (at most ~1 s) before re-raising.
    """
    if sock is None:
        sock = bind_socket(host, port)  # bind errors surface here as OSError
    server = _Server(
        _config(app or create_app(), host, port, log_config=None), ready, handle_signals=False
    )
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await task
        raise


def run(host: str = "127.0.0.1", port: int = 8090) -> None:
    """Run the simulator in the foreground (installs uvloop; Ctrl-C stops it)."""
    server = _Server(_config(create_app(), host, port), None, handle_signals=True)
    server.run()
