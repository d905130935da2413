"""A provider worker: consumes routed attempts for one provider from IGW_WORK,
runs each through the provider's adapter, and publishes chunks, the terminal
event and the usage event.

Delivery rules:
- a work message is acked only after its usage event is stored in IGW_USAGE
  and the attempt is marked finished in the ``igw_attempts`` KV bucket;
- a redelivered attempt that is already marked finished is acked without
  calling the upstream again;
- long attempts send progress acks so they are not redelivered while alive;
- a cancel on ``igw.cancel.<request_id>`` stops the upstream call, and the
  tokens generated so far are accounted as a cancelled attempt;
- on SIGTERM the worker leaves its deliver group and lets attempts in flight
  finish for ``workers.shutdown_grace_s``; then an attempt that has not answered
  yet is naked (another worker runs it), and one whose answer had started ends
  with an error event and is accounted as cancelled (no retry after the first byte).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.kv import KeyValue
from opentelemetry.trace import Span
from pydantic import ValidationError

from schemas import subjects as s
from schemas.bus import Cancel, ErrorInfo, ReplyMeta, UsageEvent, WorkItem
from services.runtime import tracing
from services.runtime.bus import connect, wait_for_streams
from services.runtime.consumers import PushConsumer, consume
from services.runtime.draining import MessageHandlers
from services.runtime.errors import ServiceUnavailable
from services.runtime.logs import bind_request
from services.runtime.metrics import WorkerMetrics
from services.runtime.settings import Settings
from services.workers import genai, registry
from services.workers.attempt import Progress, run_attempt, usage_event
from services.workers.http import UpstreamHTTP
from services.workers.protocol import ProviderAdapter

log = logging.getLogger("igw.worker")
STOPPED_MID_ANSWER = ServiceUnavailable(
    "the worker serving this request shut down before the answer was complete; retry it",
    code="shutting_down",
)
BATCH_REPLY_TRIES = 60

RECENT_CANCELS = 4096


@dataclass(slots=True)
class InFlight:
    msg: Msg
    task: asyncio.Task[None]
    started: float = field(default_factory=time.monotonic)
    last_progress: float = field(default_factory=time.monotonic)
    cancelled_by_client: bool = False


class Worker:
    def __init__(self, settings: Settings, provider: str) -> None:
        self.settings = settings
        self.provider = provider
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._kv: KeyValue | None = None
        self._http = UpstreamHTTP(settings.workers)
        self._adapter: ProviderAdapter = registry.create(provider, self._http)
        self._inflight: dict[str, InFlight] = {}
        self._recent_cancels: dict[str, None] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._handlers = MessageHandlers()
        self._sub: JetStreamContext.PushSubscription | None = None
        self.metrics = WorkerMetrics()

    async def start(self) -> None:
        self._nc = nc = await connect(self.settings, f"worker-{self.provider}")
        self._js = js = nc.jetstream()
        await wait_for_streams(
            js, [s.STREAM_WORK, s.STREAM_USAGE, s.KV_ATTEMPTS_STREAM], wait_s=30.0
        )
        self._kv = await js.key_value(s.KV_ATTEMPTS)
        await nc.subscribe(s.CANCEL_WILDCARD, cb=self._on_cancel)
        bus = self.settings.bus
        spec = PushConsumer(
            stream=s.STREAM_WORK,
            name=s.worker_consumer(self.provider),
            filter_subject=s.work_filter(self.provider),
            ack_wait_s=bus.work_ack_wait_s,
            max_deliver=bus.work_max_deliver,
            max_ack_pending=bus.max_ack_pending,
        )
        self._sub = await consume(js, spec, self._on_work)
        self._spawn(self._progress_loop())
        log.info(
            "worker for provider %s is consuming %s", self.provider, s.work_filter(self.provider)
        )

    async def stop(self, grace_s: float | None = None) -> None:
        """Leave the deliver group, let in-flight attempts finish, then disconnect.

        Attempts still running after the grace period (``workers.shutdown_grace_s``)
        are cancelled: those that have not answered are naked, so JetStream hands
        them to another worker at once (see ``services.runtime.draining``).
        """
        if grace_s is None:
            grace_s = self.settings.workers.shutdown_grace_s
        await self._handlers.drain(self._sub, grace_s, "attempts")
        for task in list(self._tasks):
            task.cancel()
        await self._http.close()
        if self._nc is not None and self._nc.is_connected:
            with contextlib.suppress(Exception):
                await self._nc.drain()

    # ------------------------------------------------------------------ consume

    async def _on_work(self, msg: Msg) -> None:
        await self._handlers.dispatch(msg, self._handle(msg))

    async def _handle(self, msg: Msg) -> None:
        try:
            item = WorkItem.model_validate_json(msg.data)
        except ValidationError as exc:
            log.error("dropping a malformed work message: %s", exc.errors()[:3])
            await msg.term()
            return
        with genai.call_span(item, msg.headers) as span:
            bind_request(item.request.request_id)
            await self._attempt(msg, item, span)

    async def _attempt(self, msg: Msg, item: WorkItem, span: Span) -> None:
        req = item.request
        delivery = msg.metadata.num_delivered or 1
        if delivery > 1 and await self._already_finished(req.request_id, item.route.attempt):
            log.info(
                "attempt %s:%d already finished; not calling upstream again",
                req.request_id,
                item.route.attempt,
            )
            await msg.ack()
            return
        deployment = self.settings.deployment(item.route.deployment)
        if deployment is None or deployment.provider != self.provider:
            error = ServiceUnavailable(
                f"deployment {item.route.deployment} is not configured on this worker"
            )
            meta = ReplyMeta(
                kind="terminal",
                request_id=req.request_id,
                attempt=item.route.attempt,
                seq=0,
                provider=self.provider,
                deployment=item.route.deployment,
                error=error.to_info(),
            )
            await self._send(req.reply_subject, meta, b"")
            await msg.ack()
            return
        if req.request_id in self._recent_cancels:
            if delivery == 1:
                await msg.ack()  # cancelled before any worker ran it
                return
            # an earlier delivery ran and its worker died before the usage event: record
            # the attempt (a duplicate of that event if it was stored after all)
            usage = usage_event(item, deployment, Progress(), "cancelled", None)
            if await self._finish(msg, usage):
                self.metrics.attempt(usage, req.operation)
            return
        key = f"{req.request_id}:{item.route.attempt}"
        progress = Progress()

        async def send(meta: ReplyMeta, payload: bytes) -> None:
            await self._send(req.reply_subject, meta, payload)

        task = asyncio.current_task()
        assert task is not None
        flight = InFlight(msg=msg, task=task)
        self._inflight[key] = flight
        try:
            usage = await run_attempt(
                item,
                deployment,
                self._adapter,
                send,
                progress,
                delivery,
                retry=lambda info: self._retry(item, info),
                hedge=lambda: self._hand_back(item, None, hedge=True),
            )
        except asyncio.CancelledError:
            if flight.cancelled_by_client:
                task.uncancel()
                usage = usage_event(item, deployment, progress, "cancelled", None)
            elif self._handlers.stopping and progress.sent_output:
                task.uncancel()  # shutting down mid-answer: end it, account what was used
                info = STOPPED_MID_ANSWER.to_info()
                meta = ReplyMeta(
                    kind="terminal",
                    request_id=req.request_id,
                    attempt=item.route.attempt,
                    delivery=delivery,
                    seq=progress.seq,
                    provider=self.provider,
                    deployment=item.route.deployment,
                    error=info,
                )
                await self._send(req.reply_subject, meta, b"")
                usage = usage_event(item, deployment, progress, "cancelled", info)
            else:
                raise  # shutting down before an answer: the message is naked for another worker
        finally:
            self._inflight.pop(key, None)
        genai.record(span, usage, progress)
        log.debug(
            "attempt %s %s on %s: %d prompt + %d completion tokens",
            key,
            usage.status,
            usage.deployment,
            usage.prompt_tokens,
            usage.completion_tokens,
        )
        if await self._finish(msg, usage):
            self.metrics.attempt(usage, req.operation)

    async def _retry(self, item: WorkItem, error: ErrorInfo) -> bool:
        """Republish a request whose attempt failed before its first byte, for the router
        to route again (another deployment, a fallback, or a retry after backoff); the
        router answers the client with ``error`` when nothing is left. False: the caller
        reports the error itself."""
        assert self._js is not None
        routing, req, attempt = self.settings.routing, item.request, item.route.attempt
        if attempt >= routing.max_attempts or req.request_id in self._recent_cancels:
            return False
        if error.retry_after is not None and error.retry_after > routing.retry_after_max_s:
            return False
        if time.time() >= req.deadline:
            return False
        return await self._hand_back(item, error)

    async def _hand_back(
        self, item: WorkItem, error: ErrorInfo | None, hedge: bool = False
    ) -> bool:
        """Publish the request again for its next attempt (a retry, or a hedge racing
        this one); True once it is stored."""
        assert self._js is not None
        req, attempt = item.request, item.route.attempt
        again = req.model_copy(
            update={
                "attempt": attempt + 1,
                "tried": [*req.tried, item.route.deployment],
                "last_error": error,
                "hedge": hedge,
            }
        )
        try:
            await self._js.publish(
                s.request_subject(req.priority),
                again.model_dump_json().encode(),
                headers=tracing.inject(
                    {s.HEADER_MSG_ID: s.retry_msg_id(req.request_id, attempt + 1)}
                ),
                timeout=5.0,
            )
        except Exception as exc:  # the bus is unavailable: the client gets this error now
            log.warning("could not hand %s back for another attempt: %s", req.request_id, exc)
            return False
        return True

    async def _finish(self, msg: Msg, usage: UsageEvent) -> bool:
        """Store the usage event, mark the attempt finished, then ack (True); False when
        the usage event could not be stored and the attempt was given back.

        The usage publish is queued in the same tick as the terminal reply, so
        both leave in one write; the KV mark and the ack leave together too.
        """
        assert self._js is not None
        assert self._nc is not None
        key = s.attempt_key(usage.request_id, usage.attempt)
        payload = usage.model_dump_json().encode()
        headers = tracing.inject(
            {s.HEADER_MSG_ID: s.attempt_msg_id(usage.request_id, usage.attempt)}
        )
        subject = s.usage_subject(usage.provider)
        for attempt in range(5):
            try:
                ack = await self._js.publish_async(subject, payload, headers=dict(headers))
                await asyncio.wait_for(ack, timeout=5.0)
                break
            except Exception as exc:  # timeouts and API errors alike: retry, then give back
                log.warning("usage publish for %s failed (%s); retrying", key, exc)
                await asyncio.sleep(0.2 * (attempt + 1))
        else:
            await msg.nak(delay=5.0)
            return False
        await self._nc.publish(f"$KV.{s.KV_ATTEMPTS}.{key}", b"done")
        await msg.ack()
        return True

    async def _already_finished(self, request_id: str, attempt: int) -> bool:
        assert self._kv is not None
        try:
            await self._kv.get(s.attempt_key(request_id, attempt))
        except Exception:  # KeyNotFoundError, or a deleted/expired entry
            return False
        return True

    async def _send(self, subject: str, meta: ReplyMeta, payload: bytes) -> None:
        """A reply event: core NATS for a waiting client; for a batch item, a
        JetStream publish that is retried until stored, because nobody waits for
        a batch item and a lost answer would leave its batch unfinished."""
        assert self._nc is not None
        headers = {s.HEADER_REPLY: meta.model_dump_json()}
        if not s.is_batch_reply(subject):
            await self._nc.publish(subject, payload, headers=headers)
            return
        assert self._js is not None
        msg_id = f"{meta.request_id}:{meta.attempt}:{meta.delivery}:{meta.seq}"
        for attempt in range(BATCH_REPLY_TRIES):
            try:
                await self._js.publish(
                    subject, payload, headers={**headers, s.HEADER_MSG_ID: msg_id}, timeout=5.0
                )
                return
            except Exception as exc:  # the bus is down or restarting: wait for it
                log.warning("storing the batch reply %s failed (%s); retrying", msg_id, exc)
                await asyncio.sleep(min(0.2 * (attempt + 1), 2.0))
        raise ServiceUnavailable(f"could not store the batch reply {msg_id}")

    # ------------------------------------------------------------------- cancel

    async def _on_cancel(self, msg: Msg) -> None:
        try:
            cancel = Cancel.model_validate_json(msg.data)
        except ValidationError:
            return
        if cancel.keep_attempt is None:
            self._recent_cancels[cancel.request_id] = None
            if len(self._recent_cancels) > RECENT_CANCELS:
                self._recent_cancels.pop(next(iter(self._recent_cancels)))
        prefix = f"{cancel.request_id}:"
        for key, flight in list(self._inflight.items()):
            if not key.startswith(prefix) or flight.task.done():
                continue
            if cancel.keep_attempt is not None and key == f"{prefix}{cancel.keep_attempt}":
                continue
            log.info("cancelling %s: %s", key, cancel.reason)
            flight.cancelled_by_client = True
            flight.task.cancel()

    # ----------------------------------------------------------------- progress

    async def _progress_loop(self) -> None:
        """Tell JetStream that long attempts are alive, so they are not redelivered."""
        interval = max(0.5, self.settings.bus.work_ack_wait_s / 3)
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for flight in list(self._inflight.values()):
                if now - flight.last_progress >= interval:
                    flight.last_progress = now
                    with contextlib.suppress(Exception):
                        await flight.msg.in_progress()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
