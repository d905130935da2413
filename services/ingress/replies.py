"""Reply events coming back to this ingress.

One core-NATS subscription on ``igw.chunks.<ingress_id>.*`` is made at
start-up, before any request is published; each in-flight request registers a
bounded queue under its request id. Events for unknown ids (a client that left)
are dropped. An event is a ``ReplyMeta`` header plus an OpenAI JSON payload
that is relayed to the client without being parsed.
"""

from __future__ import annotations

import asyncio
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
from services.runtime.errors import DeadlineExceeded, UpstreamProtocolError

log = logging.getLogger("igw.ingress.replies")


@dataclass(frozen=True, slots=True)
class Reply:
    meta: ReplyMeta
    payload: bytes


class ReplyStream:
    """The events of one request, in arrival order."""

    __slots__ = (
        "_queue",
        "attempt",
        "deadline",
        "on_close",
        "overflowed",
        "request_id",
        "terminal",
    )

    def __init__(
        self,
        request_id: str,
        deadline: float,
        limit: int,
        on_close: Callable[[ReplyMeta | None], None] | None = None,
    ) -> None:
        self.request_id = request_id
        self.deadline = deadline
        self.overflowed = False
        self.on_close = on_close
        """Called once when the stream is closed, with its terminal event (None when
        the stream ended without one: the client left or the deadline passed)."""
        self.terminal: ReplyMeta | None = None
        self.attempt: int | None = None
        """The attempt whose events reach the client: the first one heard from (when a
        hedge races an attempt, the other's events are dropped here)."""
        self._queue: asyncio.Queue[Msg] = asyncio.Queue(maxsize=limit)

    def put(self, msg: Msg) -> None:
        try:
            self._queue.put_nowait(msg)
        except asyncio.QueueFull:
            self.overflowed = True

    def next_ready(self) -> Reply | None:
        """The next event if one is already queued, without waiting."""
        while not self._queue.empty():
            reply = self._keep(self._decode(self._queue.get_nowait()))
            if reply is not None:
                return reply
        return None

    def _keep(self, reply: Reply) -> Reply | None:
        if self.attempt is None:
            self.attempt = reply.meta.attempt
        if reply.meta.attempt != self.attempt:
            return None
        if reply.meta.kind == "terminal":
            self.terminal = reply.meta
        return reply

    async def next(self) -> Reply:
        """The next event of the chosen attempt; raises ``DeadlineExceeded`` when the
        deadline passes."""
        while True:
            reply = self._keep(await self._next_any())
            if reply is not None:
                return reply

    async def _next_any(self) -> Reply:
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
    def __init__(self, nc: Client, ingress_id: str, buffer_limit: int) -> None:
        self._nc = nc
        self.ingress_id = ingress_id
        self._limit = buffer_limit
        self._streams: dict[str, ReplyStream] = {}
        self._sub: Subscription | None = None

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
    ) -> ReplyStream:
        stream = ReplyStream(request_id, deadline, self._limit, on_close)
        self._streams[request_id] = stream
        return stream

    def close(self, request_id: str) -> None:
        stream = self._streams.pop(request_id, None)
        if stream is not None and stream.on_close is not None:
            hook, stream.on_close = stream.on_close, None
            hook(stream.terminal)

    @property
    def in_flight(self) -> int:
        return len(self._streams)

    async def _on_msg(self, msg: Msg) -> None:
        stream = self._streams.get(msg.subject.rpartition(".")[2])
        if stream is not None:
            stream.put(msg)
