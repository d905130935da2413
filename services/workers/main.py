"""Entry point: ``igw worker --provider NAME``."""

from __future__ import annotations

import asyncio

from services.runtime.settings import Settings
from services.workers.service import Worker


async def serve(settings: Settings, provider: str, stop: asyncio.Event) -> None:
    worker = Worker(settings, provider)
    await worker.start()
    await stop.wait()
    await worker.stop()
