"""Run a service's main coroutine on uvloop until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable

import uvloop

from services.runtime.gc_tuning import tune_gc


def run(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Call ``main(stop)``; ``stop`` is set on SIGINT/SIGTERM and main returns."""

    async def entry() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        tune_gc()
        await main(stop)

    uvloop.run(entry())
