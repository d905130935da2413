"""Entry point: ``igw router``."""

from __future__ import annotations

import asyncio

from services.router.service import Router
from services.runtime.metrics_http import serving
from services.runtime.settings import Settings


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    router = Router(settings)
    await router.start()
    async with serving("router", router.metrics.registry, settings.metrics, router.refresh_metrics):
        await stop.wait()
    await router.stop()
