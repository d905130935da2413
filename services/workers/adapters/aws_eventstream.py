"""Reading AWS event streams (``application/vnd.amazon.eventstream``) from an upstream reply.

Frames are decoded by botocore (:class:`botocore.eventstream.EventStreamBuffer`), which
checks both CRCs; a frame it cannot decode is an
:class:`~services.runtime.errors.UpstreamProtocolError`. Each decoded frame becomes a
:class:`Frame`: an ``event`` (``:event-type`` + JSON payload), an ``exception`` (a
modelled error: ``:exception-type`` + ``{"message"}``) or an ``error`` (``:error-code``
+ ``:error-message`` headers).
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from botocore.eventstream import EventStreamBuffer, ParserError

from services.runtime.errors import UpstreamProtocolError
from services.workers.http import StreamReply


@dataclass(frozen=True, slots=True)
class Frame:
    message_type: str
    """``event``, ``exception`` or ``error``."""
    name: str
    """The event type, exception type or error code."""
    payload: dict[str, Any]
    """The JSON payload (``{"message": ...}`` for an ``error`` frame, from its headers)."""


async def raw_chunks(reply: StreamReply) -> AsyncIterator[bytes]:
    """The reply's body bytes as they arrive."""
    async for data in reply.chunks():
        yield data


class FrameReader:
    """Feed bytes in, get whole frames out (a frame may span several chunks)."""

    def __init__(self, deployment: str) -> None:
        self._deployment = deployment
        self._buffer = EventStreamBuffer()

    def feed(self, data: bytes) -> Iterator[Frame]:
        """The frames completed by ``data``, in order; a broken frame raises when reached,
        after the frames before it."""
        self._buffer.add_data(data)
        while True:
            try:
                message = next(self._buffer)
            except StopIteration:
                return
            except (ParserError, struct.error, UnicodeDecodeError, KeyError, ValueError) as exc:
                raise UpstreamProtocolError(
                    f"deployment {self._deployment} sent a malformed event-stream frame: "
                    f"{type(exc).__name__}"
                ) from None
            yield self._frame(message.headers, message.payload)

    def _frame(self, headers: dict[str, Any], payload: bytes) -> Frame:
        kind = str(headers.get(":message-type", "event"))
        if kind == "error":
            message = str(headers.get(":error-message", ""))
            return Frame(kind, str(headers.get(":error-code", "")), {"message": message})
        name = headers.get(":exception-type" if kind == "exception" else ":event-type")
        try:
            data = orjson.loads(payload or b"{}")
        except orjson.JSONDecodeError:
            data = None
        if not isinstance(name, str) or not isinstance(data, dict):
            raise UpstreamProtocolError(
                f"deployment {self._deployment} sent an event-stream frame without a type or "
                "with a payload that is not a JSON object"
            )
        return Frame(kind, name, data)
