"""The bus layout: streams, KV buckets and object stores, declared idempotently by one owner.

The router applies this at start-up (and ``igw init`` does the same on demand);
other services only wait for the streams they need. Re-applying updates a
stream whose settings changed instead of silently keeping the old ones. Each
declaration is retried while JetStream cannot answer yet (a cluster electing
its leaders, a slow R3 placement), for up to a minute (``bus.until_ready``).
"""

from __future__ import annotations

import logging
from functools import partial

from nats.js import JetStreamContext
from nats.js.api import (
    DiscardPolicy,
    KeyValueConfig,
    ObjectStoreConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError, NotFoundError

from schemas import subjects as s
from services.runtime.bus import until_ready
from services.runtime.settings import Settings

log = logging.getLogger("igw.topology")

DAY_S = 86_400.0
LIMIT_WINDOW_TTL_S = 180.0
"""A minute's counters are kept a little past their minute, then dropped."""


def stream_configs(settings: Settings) -> list[StreamConfig]:
    bus = settings.bus

    def stream(
        name: str, description: str, subject: str, retention: RetentionPolicy, max_age_s: float
    ) -> StreamConfig:
        return StreamConfig(
            name=name,
            description=description,
            subjects=[subject],
            retention=retention,
            storage=StorageType.FILE,
            duplicate_window=bus.duplicate_window_s,
            num_replicas=settings.nats.stream_replicas,
            max_age=max_age_s,
            discard=DiscardPolicy.OLD,
        )

    work, limits = RetentionPolicy.WORK_QUEUE, RetentionPolicy.LIMITS
    return [
        stream(s.STREAM_REQUESTS, "accepted requests, ingress to router",
               s.REQUESTS_WILDCARD, work, DAY_S),
        stream(s.STREAM_WORK, "routed attempts, router to provider workers",
               s.WORK_WILDCARD, work, DAY_S),
        stream(s.STREAM_USAGE, "one usage event per attempt, workers to accounting",
               s.USAGE_WILDCARD, limits, bus.usage_max_age_days * DAY_S),
        stream(s.STREAM_BATCH, "async batch submissions and results",
               s.BATCH_WILDCARD, limits, 30 * DAY_S),
    ]  # fmt: skip


def kv_configs(settings: Settings) -> list[KeyValueConfig]:
    replicas = settings.nats.stream_replicas

    def bucket(
        name: str, description: str, ttl: float | None = None, max_value_size: int | None = None
    ) -> KeyValueConfig:
        return KeyValueConfig(
            bucket=name,
            description=description,
            ttl=ttl,
            max_value_size=max_value_size,
            history=1,
            storage=StorageType.FILE,
            replicas=replicas,
        )

    return [
        bucket(s.KV_ATTEMPTS, "finished attempts, so a redelivered one is not run twice",
               ttl=settings.bus.attempts_ttl_s),
        bucket(s.KV_KEYS, "virtual keys, stored as keyed hashes"),
        bucket(s.KV_CACHE, "cached non-streaming answers (x-gateway cache)",
               ttl=settings.cache.ttl_s, max_value_size=settings.cache.max_entry_bytes),
        bucket(s.KV_IDEMPOTENCY, "answers by Idempotency-Key, replayed to repeats",
               ttl=settings.idempotency.ttl_s),
        bucket(s.KV_SPEND, "budget spend and holds; parallel-request slots"),
        bucket(s.KV_LIMITS, "per-minute request and token counters", ttl=LIMIT_WINDOW_TTL_S),
        bucket(s.KV_HEALTH, "circuit-breaker state per deployment, shared by router replicas"),
        bucket(s.KV_BATCHES, "batch state and finished batch items"),
    ]  # fmt: skip


def object_store_configs(settings: Settings) -> list[ObjectStoreConfig]:
    return [
        ObjectStoreConfig(
            bucket=s.OBJ_FILES,
            description="files uploaded through /v1/files (batch input)",
            storage=StorageType.FILE,
            replicas=settings.nats.stream_replicas,
        ),
    ]


async def declare(js: JetStreamContext, settings: Settings) -> None:
    for config in stream_configs(settings):
        await until_ready(partial(_ensure_stream, js, config), f"stream {config.name}")
    for kv in kv_configs(settings):
        await until_ready(partial(_ensure_kv, js, kv), f"KV bucket {kv.bucket}")
    for obj in object_store_configs(settings):
        await until_ready(partial(_ensure_object_store, js, obj), f"object store {obj.bucket}")


async def _ensure_kv(js: JetStreamContext, kv: KeyValueConfig) -> None:
    try:
        await js.key_value(kv.bucket)
    except (NotFoundError, BadRequestError):
        await js.create_key_value(kv)
        log.info("created KV bucket %s", kv.bucket)


async def _ensure_object_store(js: JetStreamContext, obj: ObjectStoreConfig) -> None:
    assert obj.bucket is not None
    try:
        await js.object_store(obj.bucket)
    except (NotFoundError, BadRequestError):
        # nats-py sets config.bucket from the first argument, so both are given
        await js.create_object_store(obj.bucket, config=obj)
        log.info("created object store %s", obj.bucket)


async def _ensure_stream(js: JetStreamContext, config: StreamConfig) -> None:
    assert config.name is not None
    try:
        info = await js.stream_info(config.name)
    except NotFoundError:
        await js.add_stream(config)
        log.info("created stream %s on %s", config.name, ", ".join(config.subjects or []))
        return
    current = info.config
    if _differs(current, config):
        await js.update_stream(config)
        log.info("updated stream %s to the configured settings", config.name)


def _differs(current: StreamConfig, wanted: StreamConfig) -> bool:
    fields = ("subjects", "retention", "storage", "duplicate_window", "max_age", "num_replicas")
    return any(getattr(current, f) != getattr(wanted, f) for f in fields)
