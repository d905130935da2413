"""Chunks and terminal events coming back to this ingress.

One core-NATS subscription on ``igw.chunks.<ingress_id>.*`` is made at
start-up, before any request is published; each in-flight request registers a
bounded queue under its request id. Events for unknown ids (a client that left)
are dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import ValidationError

from schemas import subjects as s
from schemas.bus import REPLY_EVENT, Terminal, TokenChunk
from services.runtime.errors import DeadlineExceeded, UpstreamProtocolError

log = logging.getLogger("igw.ingress.replies")


class ReplyStream:
    """The events of one request, in arrival order."""

    __slots__ = ("_queue", "deadline", "overflowed", "request_id")

    def __init__(self, request_id: str, deadline: float, limit: int) -> None:
        self.request_id = request_id
        self.deadline = deadline
        self.overflowed = False
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=limit)

    def put(self, data: bytes) -> None:
        try:
            self._queue.put_nowait(data)
        except asyncio.QueueFull:
            self.overflowed = True

    async def next(self) -> TokenChunk | Terminal:
        """The next event; raises ``DeadlineExceeded`` when the deadline passes."""
        if self.overflowed and self._queue.empty():
            raise UpstreamProtocolError("the client read too slowly; the stream was dropped")
        remaining = self.deadline - time.time()
        if remaining <= 0 and self._queue.empty():
            raise DeadlineExceeded("the request did not finish before its deadline")
        try:
            data = self._queue.get_nowait()
        except asyncio.QueueEmpty:
            try:
                async with asyncio.timeout(remaining):
                    data = await self._queue.get()
            except TimeoutError:
                raise DeadlineExceeded("the request did not finish before its deadline") from None
        try:
            return REPLY_EVENT.validate_json(data)
        except ValidationError as exc:
            raise UpstreamProtocolError(f"a worker sent a malformed event: {exc}") from None


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

    def open(self, request_id: str, deadline: float) -> ReplyStream:
        stream = ReplyStream(request_id, deadline, self._limit)
        self._streams[request_id] = stream
        return stream

    def close(self, request_id: str) -> None:
        self._streams.pop(request_id, None)

    @property
    def in_flight(self) -> int:
        return len(self._streams)

    async def _on_msg(self, msg: Msg) -> None:
        request_id = msg.subject.rpartition(".")[2]
        stream = self._streams.get(request_id)
        if stream is not None:
            stream.put(msg.data)
