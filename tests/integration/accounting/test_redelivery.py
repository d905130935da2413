"""Writer and puller in-process against a real nats-server: fates of messages on the bus."""

from __future__ import annotations

import asyncio
import time

import pytest
from nats.aio.client import Client
from nats.js.api import ConsumerInfo

from schemas.subjects import CONSUMER_ACCOUNTING, STREAM_USAGE, USAGE_WILDCARD
from services.accounting.consumer import consumer_config, ensure_consumer
from services.accounting.puller import UsagePuller
from services.accounting.writer import UsageWriter
from services.runtime.settings import Settings
from tests.integration.accounting.harness import eventually, publish
from tests.unit.accounting.factories import usage_event
from tests.unit.accounting.fakes import FakeStore

pytestmark = pytest.mark.integration

NAK_DELAY_S = 0.3


async def test_failed_insert_is_redelivered_after_the_nak_delay(
    settings: Settings, nc: Client
) -> None:
    js = nc.jetstream()
    config = consumer_config(settings, ack_wait_s=30)
    await ensure_consumer(js, config)
    subscription = await js.pull_subscribe(
        USAGE_WILDCARD, durable=CONSUMER_ACCOUNTING, stream=STREAM_USAGE, config=config
    )
    store = FakeStore()
    store.fail_next = 1
    writer = UsageWriter(store, batch_size=3, flush_interval_s=0.05, nak_delay_s=NAK_DELAY_S)
    puller = UsagePuller(subscription, writer, batch_size=3, fetch_timeout_s=0.05)
    tasks = [asyncio.create_task(writer.run()), asyncio.create_task(puller.run())]
    try:
        events = [usage_event(i) for i in range(1, 4)]
        published_at = time.monotonic()
        await publish(js, events)

        async def stored() -> bool | None:
            return True if store.batches else None

        await eventually(stored, "the retried insert", within_s=10)
        assert time.monotonic() - published_at >= NAK_DELAY_S
        batch, _ = store.batches[0]
        assert sorted(e.request_id for e in batch) == [e.request_id for e in events]

        async def acked() -> ConsumerInfo | None:
            info = await js.consumer_info(STREAM_USAGE, CONSUMER_ACCOUNTING)
            return info if info.num_ack_pending == 0 and info.num_pending == 0 else None

        info = await eventually(acked, "every message acked after the second delivery")
        assert info.delivered is not None
        assert info.delivered.consumer_seq == 2 * len(events)  # each delivered twice
    finally:
        await puller.stop()
        await writer.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
