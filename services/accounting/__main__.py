"""``python -m services.accounting``: run the accounting service until SIGINT/SIGTERM.

Settings come from ``services.runtime.config.load_settings()`` (YAML file and
``IGW_*`` environment variables). ``--ack-wait-s`` overrides the consumer's
ack wait (``bus.usage_ack_wait_s``: how long a crashed process's messages wait
before redelivery).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from services.accounting.service import serve
from services.accounting.store import StoreUnavailable
from services.runtime.bus import BusUnavailable
from services.runtime.config import ConfigError, load_settings
from services.runtime.settings import Settings


async def _main(settings: Settings, ack_wait_s: float | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await serve(settings, stop, ack_wait_s=ack_wait_s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.accounting")
    parser.add_argument("--ack-wait-s", type=float, default=None, metavar="SECONDS")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.logging.level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        asyncio.run(_main(settings, args.ack_wait_s))
    except (StoreUnavailable, BusUnavailable) as exc:
        logging.getLogger("igw.accounting").error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
