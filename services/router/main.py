"""Entry point: ``igw router``."""

from __future__ import annotations

import asyncio

from services.router.service import Router
from services.runtime.settings import Settings


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    router = Router(settings)
    await router.start()
    await stop.wait()
    await router.stop()
