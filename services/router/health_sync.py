"""Keep a router's health book current and shared with the other replicas.

* Every usage event (a core-NATS subscription on ``igw.usage.>``: JetStream
  stores them, and every router sees them too) is recorded in the book.
* A breaker transition this router computes is written to the ``igw_health``
  KV bucket; every router watches the bucket and applies what others wrote, so
  all replicas agree on which deployments are open.
* The single probe of a cooled-down breaker is claimed with a compare-and-set
  on that record: of several replicas, one sends it.
* ``igw.router.status`` requests are answered with the book as
  ``DeploymentStatus`` rows (any replica may answer); ``queued`` counts attempts
  stored for the deployment's workers plus requests for its alias waiting for
  capacity in this replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid

import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.kv import KeyValue
from pydantic import ValidationError

from schemas import subjects as s
from schemas.bus import BreakerRecord, DeploymentStatus
from services.router.health import BreakerState, HealthBook, Outcome
from services.runtime.settings import Settings

log = logging.getLogger("igw.router.health")


class HealthSync:
    def __init__(
        self, settings: Settings, book: HealthBook, waiting: dict[str, tuple[str, str]]
    ) -> None:
        self.settings = settings
        self.book = book
        self.waiting = waiting
        self.router_id = uuid.uuid4().hex[:8]
        self._mine: dict[str, None] = {}
        self._kv: KeyValue | None = None
        self._js: JetStreamContext | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._deployments = frozenset(m.deployment for m in settings.models)

    async def start(self, nc: Client, js: JetStreamContext) -> None:
        self._js = js
        self._kv = await js.key_value(s.KV_HEALTH)
        await nc.subscribe(s.USAGE_WILDCARD, cb=self._on_usage)
        await nc.subscribe(s.ROUTER_STATUS, queue="routers", cb=self._on_status)
        watch = await self._kv.watchall()
        self._watcher = asyncio.create_task(self._follow(watch))

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()

    def routed(self, request_id: str, attempt: int) -> None:
        self._mine[f"{request_id}:{attempt}"] = None
        if len(self._mine) > 100_000:
            self._mine.pop(next(iter(self._mine)))

    # -- usage events -> book -> shared record ---------------------------------------------

    async def _on_usage(self, msg: Msg) -> None:
        event = Outcome.from_json(msg.data)
        if event is None or event.deployment not in self._deployments:
            return  # a cache hit or a router refusal: no deployment was called
        mine = self._mine.pop(f"{event.request_id}:{event.attempt}", 0) is None
        change = self.book.record(event, time.time(), mine=mine)
        if change is not None:
            await self._publish(event.deployment, change)

    async def _publish(self, deployment: str, state: BreakerState) -> None:
        assert self._kv is not None
        log.warning("circuit breaker of %s is now %s", deployment, state)
        record = BreakerRecord(
            state="closed" if state == "closed" else "open", at=time.time(), by=self.router_id
        )
        with contextlib.suppress(Exception):
            await self._kv.put(deployment, record.model_dump_json().encode())

    async def claim_probe(self, deployment: str) -> bool:
        """Compare-and-set the deployment's open record to ``probing``; True if this
        router won (or the bucket could not be reached, so it probes alone)."""
        assert self._kv is not None
        try:
            entry = await self._kv.get(deployment)
            current = BreakerRecord.model_validate_json(entry.value or b"{}")
            stale = time.time() - current.at >= self.book.policy.cooldown_s
            if current.state == "closed" or (current.state == "probing" and not stale):
                return False
            record = BreakerRecord(state="probing", at=time.time(), by=self.router_id)
            await self._kv.update(deployment, record.model_dump_json().encode(), entry.revision)
        except Exception:  # a lost compare-and-set, or no record: somebody else decides
            return False
        return True

    async def _follow(self, watch: KeyValue.KeyWatcher) -> None:
        async for entry in watch:
            if entry is None or entry.value is None or not entry.key:
                continue
            try:
                record = BreakerRecord.model_validate_json(entry.value)
            except ValidationError:
                continue
            health = self.book.get(entry.key)
            if record.state == "probing":
                if record.by != self.router_id:
                    health.probing, health.opened_at = True, record.at
                continue
            if record.by != self.router_id:
                health.probing = False
                self.book.apply(health, record.state, record.at)

    # -- status ------------------------------------------------------------------------------

    async def _on_status(self, msg: Msg) -> None:
        rows = await self.status()
        await msg.respond(orjson.dumps([r.model_dump() for r in rows]))

    async def status(self) -> list[DeploymentStatus]:
        queued = await self._queued()
        now = time.time()
        waiting: dict[str, int] = {}
        for alias, _ in self.waiting.values():
            waiting[alias] = waiting.get(alias, 0) + 1
        rows = []
        for model in self.settings.models:
            health = self.book.get(model.deployment)
            state = "half_open" if self.book.half_open(model.deployment, now) else health.state
            rows.append(
                DeploymentStatus(
                    alias=model.alias,
                    provider=model.provider,
                    deployment=model.deployment,
                    state=state,
                    error_rate=round(health.error_rate, 3),
                    recent_calls=len(health.outcomes),
                    p50_ms=health.quantile(0.5),
                    p95_ms=health.quantile(0.95),
                    ttft_ms=health.ttft_ms,
                    in_flight=health.in_flight,
                    queued=queued.get(s.work_subject(model.provider, model.deployment), 0)
                    + waiting.get(model.alias, 0),
                )
            )
        return rows

    async def _queued(self) -> dict[str, int]:
        assert self._js is not None
        try:
            info = await self._js.stream_info(s.STREAM_WORK, subjects_filter=s.WORK_WILDCARD)
        except Exception:
            return {}
        return dict(info.state.subjects or {})
