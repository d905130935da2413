"""Connecting to NATS and waiting for the bus topology.

Every service connects by URL (a local server on a laptop, a cluster in
production) through ``connect``; reconnects are unlimited and logged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import nats
from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError, ServerError, ServiceUnavailableError

from services.runtime.errors import StartupError
from services.runtime.settings import Settings

log = logging.getLogger("igw.bus")
T = TypeVar("T")

NOT_READY = (NatsTimeoutError, NoRespondersError, ServiceUnavailableError, ServerError)
"""What JetStream answers (or fails to) while it cannot serve its API yet: a cluster
electing a leader, a slow placement of a replicated stream."""
READY_WAIT_S = 60.0


class BusUnavailable(StartupError):
    """NATS could not be reached, or the topology never appeared."""


async def connect(settings: Settings, name: str) -> Client:
    """Connect to NATS, then reconnect forever after any outage.

    The first connection is retried until ``nats.connect_timeout_s`` runs out;
    then ``BusUnavailable`` is raised, so a service never hangs on start-up.
    """
    holder: list[Client] = []

    async def on_error(exc: Exception) -> None:
        # before the first connection, failed attempts are expected (a starting server)
        log.log(logging.WARNING if holder else logging.DEBUG, "nats error on %s: %s", name, exc)

    async def on_disconnect() -> None:
        if holder and not holder[0].is_closed:  # a close() is not news
            log.warning("%s disconnected from NATS; reconnecting", name)

    async def on_reconnect() -> None:
        log.info("%s reconnected to NATS", name)

    try:
        async with asyncio.timeout(settings.nats.connect_timeout_s):
            nc = await nats.connect(
                settings.nats.servers,
                name=f"igw-{name}",
                connect_timeout=min(2.0, settings.nats.connect_timeout_s),
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.25,
                allow_reconnect=True,
                error_cb=on_error,
                disconnected_cb=on_disconnect,
                reconnected_cb=on_reconnect,
                pending_size=64 * 1024 * 1024,
            )
    except TimeoutError:
        raise BusUnavailable(
            f"cannot reach NATS at {settings.nats.url} "
            f"within {settings.nats.connect_timeout_s:.0f}s"
        ) from None
    holder.append(nc)
    return nc


async def until_ready(
    call: Callable[[], Awaitable[T]], what: str, wait_s: float = READY_WAIT_S
) -> T:
    """Run an idempotent JetStream API call (a declaration, a consumer create) again
    while JetStream is not ready, for up to ``wait_s``; then its error is raised."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return await call()
        except NOT_READY as exc:
            if time.monotonic() > deadline:
                raise
            log.warning("JetStream is not ready for %s (%r); retrying", what, exc)
            await asyncio.sleep(0.5)


async def wait_for_streams(
    js: JetStreamContext, names: list[str], wait_s: float, owner: str = "the router"
) -> None:
    """Block until every stream exists (they are declared by one owner); a JetStream
    that cannot answer yet (a cluster electing its leaders) is waited for too."""
    deadline = time.monotonic() + wait_s
    warned = False
    for name in names:
        while True:
            try:
                await js.stream_info(name)
                break
            except (NotFoundError, *NOT_READY):
                if time.monotonic() > deadline:
                    raise BusUnavailable(
                        f"stream {name} does not exist; it is declared by {owner} "
                        "(`igw router` or `igw init`)"
                    ) from None
                if not warned:
                    log.info("waiting for stream %s (declared by %s)", name, owner)
                    warned = True
                await asyncio.sleep(0.05)
