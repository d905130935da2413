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
from typing import Any

import orjson
from nats.js.kv import KeyValue

from schemas.gateway_options import BODY_FIELD, GatewayOptions
from services.runtime.settings import CacheSettings

log = logging.getLogger("igw.ingress.cache")

_IGNORED = frozenset({"stream", "stream_options", "user", "metadata", BODY_FIELD})


def wanted(settings: CacheSettings, options: GatewayOptions, stream: bool) -> bool:
    if stream:
        return False
    return options.cache if options.cache is not None else settings.enabled


def key_of(model: str, body: dict[str, Any]) -> str:
    kept = {k: v for k, v in body.items() if k not in _IGNORED}
    digest = hashlib.sha256(orjson.dumps([model, kept], option=orjson.OPT_SORT_KEYS))
    return digest.hexdigest()


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

    def put(self, key: str, payload: bytes) -> None:
        """Store in the background; a failed store only costs a later miss."""

        async def store() -> None:
            with contextlib.suppress(Exception):
                await self._kv.put(key, payload)

        task = asyncio.get_running_loop().create_task(store())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
