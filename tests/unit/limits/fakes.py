"""An in-memory stand-in for a NATS KV bucket: revisions and compare-and-set."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from pydantic import BaseModel


@dataclass
class Entry:
    value: bytes
    revision: int


class FakeKv:
    """One writer's view of a bucket; ``other`` writes behind its back."""

    def __init__(self) -> None:
        self.data: dict[str, Entry] = {}
        self.revision = 0
        self.updates = 0
        self.hang = False
        self.written = asyncio.Event()
        """Set by every write (a test clears it to wait for the next)."""

    async def get(self, key: str) -> Entry:
        if self.hang:
            await asyncio.Event().wait()
        if key not in self.data:
            raise KeyNotFoundError
        return self.data[key]

    async def update(self, key: str, value: bytes, last: int | None = None) -> int:
        if self.hang:
            await asyncio.Event().wait()
        await asyncio.sleep(0)  # a round trip: other tasks run meanwhile
        self.updates += 1
        current = self.data[key].revision if key in self.data else 0
        if (last or 0) != current:
            raise KeyWrongLastSequenceError
        self.revision += 1
        self.data[key] = Entry(value, self.revision)
        self.written.set()
        return self.revision

    def other(self, key: str, record: BaseModel) -> None:
        self.revision += 1
        self.data[key] = Entry(record.model_dump_json().encode(), self.revision)
