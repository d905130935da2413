"""The router: consumes accepted requests from IGW_REQUESTS, decides where each
goes, and publishes the routed attempt to IGW_WORK.

A request message is acked only after its work item is stored; a publish that
fails is naked with a delay, so JetStream redelivers it. The work item carries
``Nats-Msg-Id = request_id:attempt``, so a redelivered request that was already
routed is stored once. The router reads only the routing fields of a request
(``RoutingView``); the body travels into the work item byte for byte. The
router also owns the bus topology: it declares the streams and KV buckets at
start-up. On SIGTERM it leaves its deliver group, finishes the requests in hand
(for up to ``SHUTDOWN_GRACE_S``) and naks the rest, so another replica routes
them at once (see ``services.runtime.draining``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from opentelemetry.trace import Span, SpanKind
from pydantic import ValidationError

from schemas import subjects as s
from schemas.bus import ErrorInfo, ReplyMeta, RoutingView, UsageEvent, work_item_json
from services.router.capacity import Capacity
from services.router.decide import Decision, NoCapacity, NoRoute, RoutingTable, decide
from services.router.gauges import BusGauges, breaker_states
from services.router.health import BreakerPolicy, HealthBook
from services.router.health_sync import HealthSync
from services.runtime import tracing
from services.runtime.bus import connect
from services.runtime.consumers import PushConsumer, consume
from services.runtime.draining import MessageHandlers
from services.runtime.errors import GatewayError, RateLimited
from services.runtime.logs import bind_request
from services.runtime.metrics import RouterMetrics
from services.runtime.settings import Settings
from services.runtime.topology import declare

log = logging.getLogger("igw.router")
ROUTER = "router"
"""Provider and deployment named on a refusal's usage row: no deployment ran it."""

BATCH_YIELD_S = 0.25
"""How long a batch request steps back while interactive ones wait for the same model."""
DEADLINE_MARGIN_S = 0.5
SHUTDOWN_GRACE_S = 5.0
"""On SIGTERM, how long requests in hand (a retry's backoff, a publish) may take."""
"""A request waiting for capacity gets its 429 this long before its deadline, so the
client hears the rate limit rather than a timeout."""


class Router:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.table = RoutingTable(settings.models, settings.routing)
        r = settings.routing
        self.health = HealthBook(
            BreakerPolicy(
                r.breaker_window, r.breaker_min_calls, r.breaker_error_rate, r.breaker_cooldown_s
            )
        )
        self.capacity = Capacity()
        self.waiting: dict[str, tuple[str, str]] = {}  # request id -> (alias, priority)
        self.sync = HealthSync(settings, self.health, self.waiting)
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._handlers = MessageHandlers()
        self._sub: JetStreamContext.PushSubscription | None = None
        self.metrics = RouterMetrics(lambda: breaker_states(settings, self.health, time.time()))
        self._gauges = BusGauges(settings, self.metrics)

    async def start(self) -> None:
        self._nc = nc = await connect(self.settings, "router")
        self._js = js = nc.jetstream()
        await declare(js, self.settings)
        await self.sync.start(nc, js)
        spec = PushConsumer(
            stream=s.STREAM_REQUESTS,
            name=s.CONSUMER_ROUTER,
            filter_subject=s.REQUESTS_WILDCARD,
            ack_wait_s=10.0,
            max_deliver=-1,
            max_ack_pending=self.settings.bus.max_ack_pending,
        )
        self._sub = await consume(js, spec, self._on_request)
        log.info(
            "router is routing %d aliases: %s",
            len(self.table.aliases()),
            ", ".join(self.table.aliases()),
        )

    async def stop(self, grace_s: float = SHUTDOWN_GRACE_S) -> None:
        """Leave the deliver group, finish the requests in hand, then disconnect."""
        await self._handlers.drain(self._sub, grace_s, "requests")
        await self.sync.stop()
        if self._nc is not None and self._nc.is_connected:
            with contextlib.suppress(Exception):
                await self._nc.drain()

    async def refresh_metrics(self) -> None:
        """Update the queue and consumer gauges from the bus (called when scraped)."""
        if self._js is not None:
            await self._gauges.refresh(self._js)

    async def _on_request(self, msg: Msg) -> None:
        await self._handlers.dispatch(msg, self._route(msg))

    async def _route(self, msg: Msg) -> None:
        assert self._js is not None
        assert self._nc is not None
        try:
            request = RoutingView.model_validate_json(msg.data)
        except ValidationError as exc:
            log.error("dropping a malformed request message: %s", exc.errors()[:3])
            await msg.term()
            return
        with _route_span(msg, request) as span:
            bind_request(request.request_id)
            await self._route_request(msg, request, span)

    async def _route_request(self, msg: Msg, request: RoutingView, span: Span) -> None:
        assert self._js is not None
        try:
            decision = await self._decide(request)
        except (NoCapacity, NoRoute) as nowhere:
            if request.hedge:
                await msg.ack()  # nowhere to hedge to: the first attempt carries on alone
                return
            if isinstance(nowhere, NoRoute):
                await self._answer(msg, request, nowhere.error)
                return
            full = nowhere
            if await self._wait_for_capacity(msg, request, full.wait_s):
                return
            waited = time.time() - request.created_at
            error = RateLimited(
                f"every deployment of `{request.model}` is at its rate limit "
                f"(waited {waited:.1f}s for capacity)",
                retry_after=full.wait_s,
            ).to_info()
            await self._answer(msg, request, error)
            return
        except GatewayError as exc:
            await self._answer(msg, request, exc.to_info())
            return
        self.waiting.pop(request.request_id, None)
        route = decision.route
        if span.is_recording():
            span.set_attributes(
                {
                    tracing.PROVIDER: route.provider,
                    tracing.DEPLOYMENT: route.deployment,
                    tracing.ATTEMPT: route.attempt,
                    tracing.ROUTE_REASON: route.reason,
                }
            )
        if decision.delay_s > 0:
            log.info(
                "retrying %s on %s in %.2fs", request.request_id, route.deployment, decision.delay_s
            )
            await _wait_holding(msg, decision.delay_s)
        try:
            await self._js.publish(
                route.subject,
                work_item_json(route, msg.data),
                headers=tracing.inject(
                    {s.HEADER_MSG_ID: s.attempt_msg_id(request.request_id, route.attempt)}
                ),
            )
        except Exception as exc:  # timeout or API error: give the request back
            log.warning("could not store work for %s (%s); will retry", request.request_id, exc)
            await msg.nak(delay=1.0)
            return
        log.debug("routed %s to %s (%s)", request.request_id, route.deployment, route.reason)
        self.sync.routed(request.request_id, route.attempt)
        await msg.ack()

    async def _answer(self, msg: Msg, request: RoutingView, error: ErrorInfo) -> None:
        """No attempt will run: tell the client why, and let the request go."""
        assert self._nc is not None
        self.waiting.pop(request.request_id, None)
        tracing.tag("error.type", error.code or error.type)
        tried = request.tried[-1] if request.tried else ""
        deployment = self.settings.deployment(tried) if tried else None
        meta = ReplyMeta(
            kind="terminal",
            request_id=request.request_id,
            attempt=max(1, request.attempt - 1),
            seq=0,
            provider=deployment.provider if deployment else "",
            deployment=tried,
            error=error,
        )
        headers = {s.HEADER_REPLY: meta.model_dump_json()}
        await self._nc.publish(request.reply_subject, b"", headers=headers)
        await self._record_refusal(request, error)
        await msg.ack()

    async def _record_refusal(self, request: RoutingView, error: ErrorInfo) -> None:
        """The usage row of an attempt the router answered instead of running
        (nothing left to try, no capacity in time): no tokens, no cost, the
        request's final row, so analysts count it and budgets release its hold."""
        assert self._js is not None
        usage = UsageEvent(
            request_id=request.request_id,
            attempt=request.attempt,
            ts=time.time(),
            key_id=request.key_id,
            tenant=request.tenant,
            user_id=request.user_id,
            model=request.model,
            provider=ROUTER,
            deployment=ROUTER,
            upstream_model="",
            priority=request.priority,
            stream=request.stream,
            batch_id=request.batch_id,
            budget_lease=request.budget_lease,
            budget_lease_hold=request.budget_lease_hold,
            status="error",
            error_type=error.code or error.type,
            http_status=error.status,
        )
        headers = tracing.inject(
            {s.HEADER_MSG_ID: s.attempt_msg_id(request.request_id, request.attempt)}
        )
        try:
            await self._js.publish(
                s.usage_subject(ROUTER),
                usage.model_dump_json().encode(),
                headers=headers,
                timeout=5.0,
            )
        except Exception as exc:  # the client has its answer; only the row is missing
            log.warning("could not record the refusal of %s: %s", request.request_id, exc)

    async def _wait_for_capacity(self, msg: Msg, request: RoutingView, wait_s: float) -> bool:
        """Leave the request in JetStream until capacity frees (a delayed nak), unless its
        wait budget would run out first: ``max_queue_wait_s`` for interactive requests,
        and the deadline for every request. Batch requests step back while interactive
        requests wait for the same model, so batch work never starves interactive work."""
        now = time.time()
        budget_end = request.deadline or now + self.settings.routing.max_queue_wait_s
        if request.priority == "interactive":
            budget_end = (request.created_at or now) + self.settings.routing.max_queue_wait_s
        if request.deadline:
            budget_end = min(budget_end, request.deadline - DEADLINE_MARGIN_S)
        if now + wait_s >= budget_end:
            return False
        self.waiting[request.request_id] = (request.model, request.priority)
        await msg.nak(delay=min(max(wait_s, 0.02), 5.0))
        return True

    async def _decide(self, request: RoutingView) -> Decision:
        """Decide; a probe of an open breaker must also win the fleet-wide claim, else
        (another replica is probing) decide again without that deployment."""
        if request.priority != "interactive" and any(
            alias == request.model and priority == "interactive"
            for alias, priority in self.waiting.values()
        ):
            raise NoCapacity(BATCH_YIELD_S)  # interactive requests for this model go first
        for _ in range(3):
            decision = decide(request, self.table, health=self.health, capacity=self.capacity)
            if not decision.probe or await self.sync.claim_probe(decision.route.deployment):
                return decision
        return decide(request, self.table, health=self.health, capacity=self.capacity)


def _route_span(msg: Msg, request: RoutingView) -> contextlib.AbstractContextManager[Span]:
    """The routing decision's span, a child of the context the request carries."""
    if not tracing.ENABLED:
        return tracing.NOOP
    return tracing.span(
        f"route {request.model}",
        parent=msg.headers or {},
        kind=SpanKind.CONSUMER,
        attributes={
            tracing.REQUEST_ID: request.request_id,
            tracing.MODEL: request.model,
            tracing.ATTEMPT: request.attempt,
            tracing.PRIORITY: request.priority,
        },
    )


async def _wait_holding(msg: Msg, seconds: float) -> None:
    """Sleep, telling JetStream the message is in hand so it is not redelivered meanwhile."""
    deadline = asyncio.get_running_loop().time() + seconds
    while (left := deadline - asyncio.get_running_loop().time()) > 0:
        with contextlib.suppress(Exception):
            await msg.in_progress()
        await asyncio.sleep(min(left, 3.0))
