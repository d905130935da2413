"""Durable JetStream push consumers shared by the replicas of a service.

The router and the workers consume through push consumers in a deliver group:
measured on the reference machine, two JetStream hops cost 1.2 ms p50 this
way against 1.8 ms with pull consumers polling through nats-py and 3.2 ms
through FastStream's subscriber machinery.

``consume`` creates the consumer or updates it to the configured settings
before binding (nats-py alone keeps an existing consumer's old settings
silently), then joins the deliver group, so replicas share the work.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import BadRequestError

from services.runtime.bus import until_ready

log = logging.getLogger("igw.bus")


@dataclass(frozen=True, slots=True)
class PushConsumer:
    stream: str
    name: str
    filter_subject: str
    ack_wait_s: float
    max_deliver: int
    max_ack_pending: int

    @property
    def deliver_subject(self) -> str:
        return f"igw.deliver.{self.name}"

    def config(self) -> ConsumerConfig:
        return ConsumerConfig(
            name=self.name,
            durable_name=self.name,
            deliver_group=self.name,
            deliver_subject=self.deliver_subject,
            filter_subject=self.filter_subject,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=self.ack_wait_s,
            max_deliver=self.max_deliver,
            max_ack_pending=self.max_ack_pending,
        )


async def _ensure(js: JetStreamContext, spec: PushConsumer, config: ConsumerConfig) -> None:
    try:
        await js.add_consumer(spec.stream, config=config)
    except BadRequestError as exc:
        # a setting that cannot be changed in place: recreate the consumer; in a
        # work-queue stream the messages stay, unacked ones are delivered again
        log.warning("recreating consumer %s on %s: %s", spec.name, spec.stream, exc.description)
        await js.delete_consumer(spec.stream, spec.name)
        await js.add_consumer(spec.stream, config=config)


async def consume(
    js: JetStreamContext, spec: PushConsumer, cb: Callable[[Msg], Awaitable[None]]
) -> JetStreamContext.PushSubscription:
    """Bind ``cb`` to the consumer; it must return quickly (hand work to a task)."""
    config = spec.config()
    await until_ready(partial(_ensure, js, spec, config), f"consumer {spec.name}")
    return await js.subscribe_bind(
        spec.stream,
        config,
        spec.name,
        cb=cb,
        manual_ack=True,
        pending_msgs_limit=spec.max_ack_pending * 4,
    )
