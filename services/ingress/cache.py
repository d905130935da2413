"""The response cache: an identical non-streaming chat request is answered from
NATS KV instead of the provider.

A request is eligible when it does not stream and caching is on for it (the
``cache`` setting, overridden by ``x-gateway.cache``). The key is a SHA-256 of
the model alias and the body without fields that do not change the answer
(``stream``, ``user``, ``metadata``, ``x-gateway``). Only successful answers
are stored, for ``cache.ttl_s``. Answers carry ``X-Cache: HIT`` or ``MISS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from typing import Any

import orjson
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from schemas import subjects as s
from schemas.bus import UsageEvent
from schemas.gateway_options import BODY_FIELD, GatewayOptions
from services.ingress.auth import Principal
from services.runtime import tracing
from services.runtime.settings import CacheSettings

log = logging.getLogger("igw.ingress.cache")

CACHE_PROVIDER = "cache"
"""The provider and deployment named on the usage row of a cache hit."""
_IGNORED = frozenset({"stream", "stream_options", "user", "metadata", BODY_FIELD})


def wanted(settings: CacheSettings, options: GatewayOptions, stream: bool) -> bool:
    if stream:
        return False
    return options.cache if options.cache is not None else settings.enabled


def key_of(model: str, body: dict[str, Any]) -> str:
    kept = {k: v for k, v in body.items() if k not in _IGNORED}
    digest = hashlib.sha256(orjson.dumps([model, kept], option=orjson.OPT_SORT_KEYS))
    return digest.hexdigest()


def hit_usage(request_id: str, model: str, principal: Principal) -> UsageEvent:
    return UsageEvent(
        request_id=request_id,
        attempt=1,
        ts=time.time(),
        key_id=principal.token,
        tenant=principal.team_id,
        user_id=principal.user_id,
        model=model,
        provider=CACHE_PROVIDER,
        deployment=CACHE_PROVIDER,
        upstream_model="",
        cache_hit=True,
    )


class ResponseCache:
    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv
        self._tasks: set[asyncio.Task[None]] = set()

    async def get(self, key: str) -> bytes | None:
        try:
            entry = await self._kv.get(key)
        except Exception:  # not found, expired, or the bus is slow: ask the provider
            return None
        return entry.value or None

    def record_hit(self, js: JetStreamContext, usage: UsageEvent) -> None:
        """Publish the usage row of an answer served from the cache (no upstream
        call, no cost), so analysts see hits and misses; in the background."""

        async def publish() -> None:
            msg_id = s.attempt_msg_id(usage.request_id, usage.attempt)
            headers = tracing.inject({s.HEADER_MSG_ID: msg_id})  # the request's HTTP span
            try:
                await js.publish(
                    s.usage_subject(CACHE_PROVIDER),
                    usage.model_dump_json().encode(),
                    headers=headers,
                    timeout=5.0,
                )
            except Exception as exc:  # only the analytics row is lost, never an answer
                log.warning("could not record a cache hit: %s", exc)

        task = asyncio.get_running_loop().create_task(publish())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def put(self, key: str, payload: bytes) -> None:
        """Store in the background; a failed store only costs a later miss."""

        async def store() -> None:
            with contextlib.suppress(Exception):
                await self._kv.put(key, payload)

        task = asyncio.get_running_loop().create_task(store())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
