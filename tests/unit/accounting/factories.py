"""Builders for usage events shared by the accounting tests."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from schemas.bus import UsageEvent

BASE_TS = 1_763_900_000.0


def usage_event(i: int, **overrides: Any) -> UsageEvent:
    """A distinct, valid event per ``i``; its cost is ``i`` micro-dollars plus a tail."""
    values: dict[str, Any] = {
        "request_id": f"req-{i:06d}",
        "attempt": 1,
        "ts": BASE_TS + i / 1000,
        "key_id": "key-1",
        "tenant": "tenant-a" if i % 2 else "tenant-b",
        "model": "sim",
        "provider": "openai",
        "deployment": "simulator",
        "upstream_model": "sim-1",
        "prompt_tokens": 10 + i,
        "completion_tokens": 20,
        "cost_usd": Decimal(i) / Decimal(1_000_000) + Decimal("0.000000000001"),
        "latency_ms": 12.5,
        "ttft_ms": 3.25 if i % 3 else None,
    }
    values.update(overrides)
    return UsageEvent(**values)


def total_cost(events: list[UsageEvent]) -> Decimal:
    return sum((e.cost_usd for e in events), Decimal(0))
