"""The accounting service: wiring only.

* Usage: the durable pull consumer ``accounting`` on IGW_USAGE, read by a
  ``UsagePuller`` into the ``UsageWriter``, which acks after the insert
  (see ``puller`` for why this is not a FastStream batch subscriber).
* Spend: a ``Settler`` reading IGW_USAGE in order into the ``igw_spend`` KV
  records that budgets read (see ``settler``).
* SQL: a FastStream ``NatsBroker`` subscriber on ``igw.accounting.sql`` (queue
  group ``accounting``) answering read-only queries from the store; with the
  embedded engine no other process may open it.

Streams are declared by the router (topology owner); this service waits for
IGW_USAGE and owns only its consumer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from datetime import timedelta
from functools import partial
from typing import Annotated, Any, Final

import nats.errors
from faststream import Context, StreamMessage
from faststream.nats import NatsBroker
from faststream.nats.message import NatsMessage

from schemas.bus import SqlResult
from schemas.subjects import (
    ACCOUNTING_SQL,
    CONSUMER_ACCOUNTING,
    KV_SPEND,
    KV_SPEND_STREAM,
    STREAM_USAGE,
    USAGE_WILDCARD,
)
from services.accounting import responder
from services.accounting.consumer import consumer_config, ensure_consumer
from services.accounting.puller import UsagePuller
from services.accounting.settler import Settler
from services.accounting.standby import StoreLock, lock_path
from services.accounting.store import ClickHouseStore, UsageStore
from services.accounting.writer import UsageWriter
from services.runtime.bus import connect, until_ready, wait_for_streams
from services.runtime.metrics import AccountingMetrics
from services.runtime.metrics_http import serving
from services.runtime.settings import Settings

log = logging.getLogger("igw.accounting")

STREAMS_TIMEOUT_S: Final = 30.0
GRACEFUL_TIMEOUT_S: Final = 10.0
MIN_FETCH_TIMEOUT_S: Final = 0.05
RESTART_DELAY_S: Final = 0.5


async def serve(
    settings: Settings, stop: asyncio.Event, *, ack_wait_s: float | None = None
) -> None:
    """Run until ``stop`` is set; flush held events on the way out."""
    ch = settings.clickhouse
    interval_s = ch.flush_interval_ms / 1000
    async with AsyncExitStack() as stack:
        if settings.clickhouse_embedded:  # one process per embedded store (see standby)
            lock = StoreLock(lock_path(settings.clickhouse_dsn))
            if not await lock.acquire(ch.standby, stop):
                return  # stopped while standing by
            stack.callback(lock.release)
        store = await ClickHouseStore.open(settings.clickhouse_dsn, ch.database)
        stack.push_async_callback(store.close)
        if ch.manage_schema:
            applied = await store.migrate()
            if applied:
                log.info("applied ClickHouse migrations %s", applied)
            await store.apply_ttl(
                {"requests": ch.ttl_days, "usage_minute": ch.minute_rollup_ttl_days}
            )
            if ch.rollup_check_days:
                window = timedelta(days=ch.rollup_check_days)
                await store.reconcile_rollups(window, ch.minute_rollup_ttl_days)
        else:
            log.info("ClickHouse schema is managed externally: no migrations, TTLs, rollup repair")

        nc = await connect(settings, "accounting")
        stack.push_async_callback(nc.close)
        js = nc.jetstream()
        await wait_for_streams(js, [STREAM_USAGE, KV_SPEND_STREAM], STREAMS_TIMEOUT_S)
        config = consumer_config(settings, ack_wait_s)
        await until_ready(partial(ensure_consumer, js, config), "the accounting consumer")
        subscription = await until_ready(
            partial(
                js.pull_subscribe,
                USAGE_WILDCARD,
                durable=CONSUMER_ACCOUNTING,
                stream=STREAM_USAGE,
                config=config,
            ),
            "the accounting consumer",
        )
        metrics = AccountingMetrics()
        writer = UsageWriter(
            store, batch_size=ch.batch_size, flush_interval_s=interval_s, on_stored=metrics.stored
        )
        puller = UsagePuller(
            subscription,
            writer,
            batch_size=ch.batch_size,
            fetch_timeout_s=max(interval_s, MIN_FETCH_TIMEOUT_S),
            linger_s=interval_s / 4,
        )
        timer = asyncio.create_task(writer.run(), name="accounting-flush-timer")
        stack.callback(timer.cancel)
        pulling = asyncio.create_task(puller.run(), name="accounting-puller")
        stack.callback(pulling.cancel)
        settler = Settler(js, await js.key_value(KV_SPEND))
        settling = asyncio.create_task(
            _restarting(settler.run, "the spend settler", stop), name="accounting-spend-settler"
        )
        stack.callback(settling.cancel)

        broker = build_broker(settings, store)
        stack.push_async_callback(broker.stop)
        await broker.start()
        await stack.enter_async_context(serving("accounting", metrics.registry, settings.metrics))
        log.info("accounting ready: consuming %s, answering %s", STREAM_USAGE, ACCOUNTING_SQL)

        await _until_stopped(stop, pulling, timer, settling)
        await settler.stop()
        await puller.stop()
        await asyncio.wait_for(pulling, GRACEFUL_TIMEOUT_S)  # the current fetch is handed over
        stored = await writer.close()
        try:
            await nc.flush()  # the acks of the last batch
        except Exception as exc:
            log.warning("could not flush the last acks (they will be redelivered): %s", exc)
        log.info("accounting stopping; flushed %d held events", stored)


async def _restarting(run: Callable[[], Awaitable[None]], what: str, stop: asyncio.Event) -> None:
    """Run ``run`` again after a NATS failure (a request timing out while a cluster elects
    its leaders); any other failure, or one once ``stop`` is set, ends it."""
    while True:
        try:
            await run()
            return
        except nats.errors.Error as exc:
            if stop.is_set():
                raise
            log.warning("%s failed (%r); starting it again", what, exc)
            await asyncio.sleep(RESTART_DELAY_S)


async def _until_stopped(stop: asyncio.Event, *workers: asyncio.Task[None]) -> None:
    """Wait for ``stop``; a worker task that dies first takes the service down with it."""
    stopped = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({stopped, *workers}, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    for task in workers:
        if task in done:
            task.result()  # re-raises the failure
            raise RuntimeError(f"{task.get_name()} ended unexpectedly")


def build_broker(settings: Settings, store: UsageStore) -> NatsBroker:
    """The FastStream broker answering SQL requests."""
    broker = NatsBroker(
        settings.nats.servers,
        name="igw-accounting-sql",
        graceful_timeout=GRACEFUL_TIMEOUT_S,
        max_reconnect_attempts=-1,
        log_level=logging.DEBUG,
    )

    @broker.subscriber(ACCOUNTING_SQL, queue=CONSUMER_ACCOUNTING, decoder=_raw_body)
    async def on_sql(msg: Annotated[NatsMessage, Context("message")]) -> SqlResult:
        return await responder.answer(store, msg.body, settings.clickhouse)

    return broker


async def _raw_body(msg: StreamMessage[Any]) -> Any:
    """No JSON decoding by FastStream: the handler parses and judges the body."""
    return msg.body
