"""``GET /metrics`` and ``GET /health`` for the services without an HTTP listener of
their own (router, workers, accounting, batcher), on ``metrics.host:metrics.port``.

A small aiohttp server, off the request path: the exposition is rendered only
when scraped. ``refresh`` coroutines (the router's queue and consumer gauges) run
first, each bounded by ``REFRESH_TIMEOUT_S``; one that fails or is late leaves its
gauges at their previous values rather than failing the scrape.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Final

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from services.runtime.errors import StartupError
from services.runtime.settings import MetricsSettings

log = logging.getLogger("igw.metrics")

Refresh = Callable[[], Awaitable[None]]
REFRESH_TIMEOUT_S: Final = 2.0


class MetricsServer:
    def __init__(
        self,
        service: str,
        registry: CollectorRegistry,
        settings: MetricsSettings,
        refresh: tuple[Refresh, ...] = (),
    ) -> None:
        self.service = service
        self.registry = registry
        self.settings = settings
        self.refresh = refresh
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/health", self._health)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.host, self.settings.port)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            raise StartupError(
                f"cannot serve metrics on {self.settings.host}:{self.settings.port} "
                f"(metrics.port): {exc.strerror or exc}"
            ) from None
        log.info(
            "%s serves /metrics on http://%s:%d",
            self.service,
            self.settings.host,
            self.settings.port,
        )

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _metrics(self, request: web.Request) -> web.Response:
        for refresh in self.refresh:
            try:
                await asyncio.wait_for(refresh(), REFRESH_TIMEOUT_S)
            except Exception as exc:  # the bus is slow or down: serve what is known
                log.debug("metrics refresh failed: %s", exc)
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _health(self, request: web.Request) -> web.Response:
        body = orjson.dumps({"status": "ok", "service": self.service})
        return web.Response(body=body, content_type="application/json")


@asynccontextmanager
async def serving(
    service: str,
    registry: CollectorRegistry,
    settings: MetricsSettings,
    *refresh: Refresh,
) -> AsyncIterator[MetricsServer | None]:
    """Serve ``registry`` while the block runs; nothing when ``metrics.port`` is 0."""
    if not settings.port:
        yield None
        return
    server = MetricsServer(service, registry, settings, refresh)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
