"""Entry point: ``igw worker --provider NAME``."""

from __future__ import annotations

import asyncio

from services.runtime.metrics_http import serving
from services.runtime.settings import Settings
from services.workers.service import Worker


async def serve(settings: Settings, provider: str, stop: asyncio.Event) -> None:
    worker = Worker(settings, provider)
    await worker.start()
    async with serving(f"worker-{provider}", worker.metrics.registry, settings.metrics):
        await stop.wait()
    await worker.stop()
