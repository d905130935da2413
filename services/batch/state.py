"""A batch's state in the ``igw_batches`` KV bucket, and the pure changes made to it.

``batch.<id>`` holds a ``BatchState``: the public Batch object plus what the
runner needs to resume after a restart (who the batch runs as, how far it has
dispatched, and a bit per item that has been counted, so a redelivered reply
is never counted twice). Nothing about a batch lives only in a process.
"""

from __future__ import annotations

import time
from typing import Final

from pydantic import BaseModel, Field

from schemas.batch import FINISHED, BatchObject, BatchStatus

WINDOW_UNITS: Final = {"m": 60, "h": 3600, "d": 86400}


def state_key(batch_id: str) -> str:
    return f"batch.{batch_id}"


class BatchState(BaseModel):
    batch: BatchObject | None = None
    key_id: str | None = None
    tenant: str | None = None
    user_id: str | None = None
    dispatched: int = Field(0, description="items 0..dispatched-1 have been published")
    done_bits: str = Field("", description="base64 bitset: item n has been counted")

    @property
    def finished(self) -> bool:
        return self.batch is not None and self.batch.status in FINISHED

    @property
    def answered(self) -> int:
        assert self.batch is not None
        counts = self.batch.request_counts
        return counts.completed + counts.failed

    @property
    def in_flight(self) -> int:
        return self.dispatched - self.answered


def window_s(text: str) -> float:
    """``24h``, ``30m``, ``7d`` in seconds; raises ValueError otherwise."""
    text = text.strip()
    if len(text) < 2 or text[-1] not in WINDOW_UNITS or not text[:-1].isdigit():
        raise ValueError(f"completion_window must look like 24h, not {text!r}")
    return int(text[:-1]) * WINDOW_UNITS[text[-1]]


def mark(batch: BatchObject, status: BatchStatus) -> None:
    """Set ``status`` and its timestamp (``<status>_at``)."""
    batch.status = status
    field = f"{status}_at"
    if field in BatchObject.model_fields:
        setattr(batch, field, int(time.time()))
