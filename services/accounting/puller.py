"""The usage consumer loop: fetch from the durable pull consumer, hand to the writer.

Why not FastStream's ``PullSub(batch=True)``: with FastStream 0.7.8 and
nats-py 2.16, ``fetch`` can raise a bare ``asyncio.TimeoutError`` that the
batch loop does not catch (it catches ``nats.errors.TimeoutError``). The loop
task dies, FastStream's supervisor restarts it, and the messages it had
collected for the partial batch are dropped until their ack wait expires.
Under a trickle of usage events that happened dozens of times a minute and
delayed events by the full ack wait. This loop catches every timeout, never
drops a fetched message, and lets the writer do the batching.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Final, Protocol

from schemas.subjects import HEADER_MSG_ID
from services.accounting.traced_ack import traced
from services.accounting.writer import UsageWriter

log = logging.getLogger("igw.accounting.puller")

RETRY_DELAY_S: Final = 0.5


class PullSubscription(Protocol):
    """The part of nats-py's ``JetStreamContext.PullSubscription`` used here."""

    # The parameter is nats-py's name; this mirrors its signature.
    async def fetch(self, batch: int = 1, timeout: float | None = 5) -> list[Any]: ...  # noqa: ASYNC109


class UsagePuller:
    """Fetches up to ``batch_size`` messages at a time until ``stop``.

    A fetch returns as soon as messages are available, or after
    ``fetch_timeout_s`` with whatever arrived. After a partial batch the loop
    lingers for ``linger_s`` so that events gather in the stream: under a
    steady flow that turns hundreds of small fetches a second into a few.
    Every fetched message goes to the writer, which owns its ack. ``stop`` lets
    the current fetch finish, so no fetched message is left behind unprocessed.
    """

    def __init__(
        self,
        subscription: PullSubscription,
        writer: UsageWriter,
        *,
        batch_size: int,
        fetch_timeout_s: float,
        retry_delay_s: float = RETRY_DELAY_S,
        linger_s: float = 0.0,
    ) -> None:
        self._subscription = subscription
        self._writer = writer
        self._batch_size = batch_size
        self._fetch_timeout = fetch_timeout_s
        self._retry_delay = retry_delay_s
        self._linger = linger_s
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                messages = await self._subscription.fetch(
                    self._batch_size, timeout=self._fetch_timeout
                )
            except TimeoutError:  # asyncio's and nats-py's: nothing arrived in time
                await asyncio.sleep(0)  # never spin without yielding
                continue
            except Exception as exc:  # disconnected, reconnecting, server busy
                if self._stopping.is_set():
                    return
                log.warning("fetching usage events failed, retrying: %s", exc)
                await self._wait(self._retry_delay)
                continue
            for msg in messages:
                handle = traced(msg)  # the message itself unless tracing is on
                await self._writer.add(msg.data, handle, (msg.headers or {}).get(HEADER_MSG_ID))
            if self._linger and len(messages) < self._batch_size:
                # A partial batch: let events gather in the stream instead of
                # paying a fetch round trip for every few of them.
                await self._wait(self._linger)

    async def stop(self) -> None:
        self._stopping.set()

    async def _wait(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
        except TimeoutError:
            return
