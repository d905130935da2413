"""A minimal Server-Sent Events reader for upstream streams."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SSEMessage:
    event: str | None
    data: str


async def read_events(lines: AsyncIterator[str]) -> AsyncIterator[SSEMessage]:
    """Group ``event:``/``data:`` lines into messages; comments and ids are skipped."""
    event: str | None = None
    data: list[str] = []
    async for raw in lines:
        line = raw.rstrip("\r\n")
        if not line:
            if data:
                yield SSEMessage(event, "\n".join(data))
            event, data = None, []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "data":
            data.append(value)
        elif field == "event":
            event = value
    if data:
        yield SSEMessage(event, "\n".join(data))
