"""The accounting consumer on IGW_USAGE, created or updated on purpose.

A durable consumer that already exists keeps its old settings when a client
binds to it, so the service applies this configuration itself before
subscribing (JetStream's consumer create request updates an existing durable
when only editable fields such as ``ack_wait`` changed).
"""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from schemas.subjects import CONSUMER_ACCOUNTING, STREAM_USAGE, USAGE_WILDCARD
from services.runtime.settings import Settings


def consumer_config(settings: Settings, ack_wait_s: float | None = None) -> ConsumerConfig:
    """Explicit acks, unlimited redelivery (usage must never be dropped).

    ``ack_wait_s`` must exceed the longest time the writer holds a message
    (flush interval plus one insert); it is also how long messages held by a
    crashed process wait before they are redelivered.
    """
    batch_size = settings.clickhouse.batch_size
    if ack_wait_s is None:
        ack_wait_s = settings.bus.usage_ack_wait_s
    return ConsumerConfig(
        name=CONSUMER_ACCOUNTING,
        durable_name=CONSUMER_ACCOUNTING,
        description="accounting: usage events into ClickHouse",
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=ack_wait_s,
        max_deliver=-1,
        # One batch being inserted, one being collected, room for redeliveries.
        max_ack_pending=4 * batch_size,
        filter_subject=USAGE_WILDCARD,
    )


async def ensure_consumer(js: JetStreamContext, config: ConsumerConfig) -> None:
    await js.add_consumer(STREAM_USAGE, config=config)
