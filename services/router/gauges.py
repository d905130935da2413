"""The router's Prometheus gauges, computed when scraped (never on the routing path).

* Breakers: each configured deployment's state in the health book, as
  :meth:`HealthSync.status` reports it (an open breaker whose cooldown has passed
  is half-open).
* Queues: IGW_REQUESTS is a work queue, so what it stores is what waits to be
  routed (or is being routed): one ``stream_info`` with a subject filter gives
  the depth per priority, and one ``get_msg`` per non-empty priority the oldest
  message's store time. Consumers: one ``consumer_info`` per durable consumer.

A refresh within ``MIN_REFRESH_S`` of the last one is skipped, so several
scrapers cost the bus no more than one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Final

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from schemas import subjects as s
from services.router.health import HealthBook
from services.runtime.metrics import RouterMetrics
from services.runtime.settings import Settings

MIN_REFRESH_S: Final = 1.0


def breaker_states(
    settings: Settings, book: HealthBook, now: float
) -> Iterator[tuple[str, str, str]]:
    """(deployment, provider, state) for every configured deployment."""
    for model in settings.models:
        if book.half_open(model.deployment, now):
            state = "half_open"
        else:
            state = book.get(model.deployment).state
        yield model.deployment, model.provider, state


def consumers(settings: Settings) -> list[tuple[str, str]]:
    """(stream, durable consumer) of every service."""
    return [
        (s.STREAM_REQUESTS, s.CONSUMER_ROUTER),
        *((s.STREAM_WORK, s.worker_consumer(p)) for p in settings.providers),
        (s.STREAM_USAGE, s.CONSUMER_ACCOUNTING),
        (s.STREAM_BATCH, s.CONSUMER_BATCH_SUBMIT),
        (s.STREAM_BATCH, s.CONSUMER_BATCH_REPLIES),
        (s.STREAM_BATCH, s.CONSUMER_BATCH_CANCELS),
    ]


class BusGauges:
    def __init__(self, settings: Settings, metrics: RouterMetrics) -> None:
        self.metrics = metrics
        self._consumers = consumers(settings)
        self._last = -MIN_REFRESH_S

    async def refresh(self, js: JetStreamContext) -> None:
        if time.monotonic() - self._last < MIN_REFRESH_S:
            return
        self._last = time.monotonic()
        await asyncio.gather(self._queues(js), self._consumer_gauges(js))

    async def _queues(self, js: JetStreamContext) -> None:
        info = await js.stream_info(s.STREAM_REQUESTS, subjects_filter=s.REQUESTS_WILDCARD)
        counts = info.state.subjects or {}
        depths = {p: counts.get(s.request_subject(p), 0) for p in s.PRIORITIES}
        waiting = [p for p, depth in depths.items() if depth]
        oldest = await asyncio.gather(
            *(
                js.get_msg(
                    s.STREAM_REQUESTS,
                    seq=info.state.first_seq,
                    subject=s.request_subject(p),
                    next=True,
                )
                for p in waiting
            ),
            return_exceptions=True,
        )
        now = time.time()
        ages = dict.fromkeys(s.PRIORITIES, 0.0)
        for priority, msg in zip(waiting, oldest, strict=True):
            if not isinstance(msg, BaseException) and msg.time is not None:
                ages[priority] = max(0.0, now - msg.time.timestamp())
        for priority in s.PRIORITIES:
            self.metrics.queue_depth.labels(priority).set(depths[priority])
            self.metrics.queue_age.labels(priority).set(ages[priority])

    async def _consumer_gauges(self, js: JetStreamContext) -> None:
        infos = await asyncio.gather(
            *(js.consumer_info(stream, name) for stream, name in self._consumers),
            return_exceptions=True,
        )
        m = self.metrics
        for (_, name), info in zip(self._consumers, infos, strict=True):
            if isinstance(info, NotFoundError):  # its service never ran: no series
                for gauge in (m.consumer_pending, m.ack_pending, m.max_ack_pending):
                    gauge.remove(name)
                continue
            if isinstance(info, BaseException):
                continue  # keep the last values
            m.consumer_pending.labels(name).set(info.num_pending or 0)
            m.ack_pending.labels(name).set(info.num_ack_pending or 0)
            m.max_ack_pending.labels(name).set(info.config.max_ack_pending or 0)
