"""Reply events coming back to this ingress.

One core-NATS subscription on ``igw.chunks.<ingress_id>.*`` is made at
start-up, before any request is published; each in-flight request registers a
bounded queue under its request id. Events for unknown ids (a client that left)
are dropped. An event is a ``ReplyMeta`` header plus an OpenAI JSON payload
that is relayed to the client without being parsed. When the ingress shuts
down, ``ReplyMux.abort_all`` ends every stream still open with an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import ValidationError

from schemas import subjects as s
from schemas.bus import ReplyMeta
from services.runtime.errors import DeadlineExceeded, GatewayError, UpstreamProtocolError

log = logging.getLogger("igw.ingress.replies")


@dataclass(frozen=True, slots=True)
class Reply:
    meta: ReplyMeta
    payload: bytes


class ReplyStream:
    """The events of one request, in arrival order."""

    __slots__ = (
        "_aborted",
        "_queue",
        "attempt",
        "deadline",
        "failure",
        "first_chunk_at",
        "model",
        "on_close",
        "opened",
        "operation",
        "overflowed",
        "provider",
        "request_id",
        "terminal",
    )

    def __init__(
        self,
        request_id: str,
        deadline: float,
        limit: int,
        on_close: Callable[[ReplyMeta | None], None] | None = None,
        *,
        model: str = "",
        operation: str = "chat",
    ) -> None:
        self.request_id = request_id
        self.model = model
        self.operation = operation
        """What the request asked for (for its metrics, see ``ReplyMux(observer=...)``)."""
        self.opened = time.monotonic()
        self.first_chunk_at: float | None = None
        """``time.monotonic()`` when the first chunk of the chosen attempt arrived."""
        self.provider = ""
        """The provider of the first event heard."""
        self.failure: int | None = None
        """The status of the error that ended the stream without a terminal event."""
        self.deadline = deadline
        self.overflowed = False
        self.on_close = on_close
        """Called once when the stream is closed, with its terminal event (None when
        the stream ended without one: the client left or the deadline passed)."""
        self.terminal: ReplyMeta | None = None
        self.attempt: int | None = None
        """The attempt whose events reach the client: the first one heard from (when a
        hedge races an attempt, the other's events are dropped here)."""
        self._aborted: GatewayError | None = None
        self._queue: asyncio.Queue[Msg | None] = asyncio.Queue(maxsize=limit)

    def put(self, msg: Msg) -> None:
        try:
            self._queue.put_nowait(msg)
        except asyncio.QueueFull:
            self.overflowed = True

    def abort(self, error: GatewayError) -> None:
        """End the stream: the next ``next`` raises ``error`` (events not yet read are dropped)."""
        self._aborted = error
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(None)  # wakes a reader waiting for the next event

    def next_ready(self) -> Reply | None:
        """The next event if one is already queued, without waiting."""
        while self._aborted is None and not self._queue.empty():
            msg = self._queue.get_nowait()
            if msg is None:
                return None
            reply = self._keep(self._decode(msg))
            if reply is not None:
                return reply
        return None

    def _keep(self, reply: Reply) -> Reply | None:
        if self.attempt is None:
            self.attempt = reply.meta.attempt
            self.provider = reply.meta.provider
        if reply.meta.attempt != self.attempt:
            return None
        if reply.meta.kind == "terminal":
            self.terminal = reply.meta
        elif self.first_chunk_at is None:
            self.first_chunk_at = time.monotonic()
        return reply

    async def next(self) -> Reply:
        """The next event of the chosen attempt; raises ``DeadlineExceeded`` when the
        deadline passes."""
        while True:
            try:
                reply = self._keep(await self._next_any())
            except GatewayError as exc:
                self.failure = exc.status
                raise
            if reply is not None:
                return reply

    async def _next_any(self) -> Reply:
        if self._aborted is not None:
            raise self._aborted
        if self.overflowed and self._queue.empty():
            raise UpstreamProtocolError("the client read too slowly; the stream was dropped")
        try:
            msg = self._queue.get_nowait()
        except asyncio.QueueEmpty:
            remaining = self.deadline - time.time()
            if remaining <= 0:
                raise DeadlineExceeded("the request did not finish before its deadline") from None
            try:
                async with asyncio.timeout(remaining):
                    msg = await self._queue.get()
            except TimeoutError:
                raise DeadlineExceeded("the request did not finish before its deadline") from None
        if msg is None:
            assert self._aborted is not None
            raise self._aborted
        return self._decode(msg)

    @staticmethod
    def _decode(msg: Msg) -> Reply:
        header = (msg.headers or {}).get(s.HEADER_REPLY)
        if header is None:
            raise UpstreamProtocolError("a worker sent a reply without its header")
        try:
            return Reply(ReplyMeta.model_validate_json(header), msg.data)
        except ValidationError as exc:
            raise UpstreamProtocolError(f"a worker sent a malformed reply: {exc}") from None


class ReplyMux:
    def __init__(
        self,
        nc: Client,
        ingress_id: str,
        buffer_limit: int,
        observer: Callable[[ReplyStream], None] | None = None,
    ) -> None:
        """``observer`` sees every stream once, when it is closed (the metrics)."""
        self._nc = nc
        self._observer = observer
        self.ingress_id = ingress_id
        self._limit = buffer_limit
        self._streams: dict[str, ReplyStream] = {}
        self._sub: Subscription | None = None
        self._aborted: GatewayError | None = None

    async def start(self) -> None:
        self._sub = await self._nc.subscribe(
            s.reply_wildcard(self.ingress_id),
            cb=self._on_msg,
            pending_msgs_limit=1_000_000,
            pending_bytes_limit=512 * 1024 * 1024,
        )

    def subject(self, request_id: str) -> str:
        return s.reply_subject(self.ingress_id, request_id)

    def open(
        self,
        request_id: str,
        deadline: float,
        on_close: Callable[[ReplyMeta | None], None] | None = None,
        *,
        model: str = "",
        operation: str = "chat",
    ) -> ReplyStream:
        stream = ReplyStream(
            request_id, deadline, self._limit, on_close, model=model, operation=operation
        )
        self._streams[request_id] = stream
        if self._aborted is not None:
            stream.abort(self._aborted)
        return stream

    def abort_all(self, error: GatewayError) -> None:
        """End every open stream, and any opened later, with ``error`` (shutting down)."""
        self._aborted = error
        for stream in self._streams.values():
            stream.abort(error)

    def close(self, request_id: str) -> None:
        stream = self._streams.pop(request_id, None)
        if stream is None:
            return
        if stream.on_close is not None:
            hook, stream.on_close = stream.on_close, None
            hook(stream.terminal)
        if self._observer is not None:
            self._observer(stream)

    @property
    def in_flight(self) -> int:
        return len(self._streams)

    async def _on_msg(self, msg: Msg) -> None:
        stream = self._streams.get(msg.subject.rpartition(".")[2])
        if stream is not None:
            stream.put(msg)
