"""Small pure helpers on batch state (the record itself is ``schemas.batch.BatchState``)."""

from __future__ import annotations

import time
from typing import Final

from schemas.batch import BatchObject, BatchStatus

WINDOW_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def window_s(text: str) -> float:
    """``24h``, ``30m``, ``7d`` (or ``90s``) in seconds; raises ValueError otherwise.
    Over HTTP only OpenAI's ``24h`` is accepted; a NATS submission may choose."""
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
