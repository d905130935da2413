"""One ``UsageEvent`` as one row of the ``requests`` table.

``check`` tells whether every value fits its column, so an event that would
make a whole batch insert fail is caught (and terminated) on its own before
it reaches the store; ``to_row`` checks too. ``None`` tenant and key become ``''``: they are
sorting-key columns, which cannot be ``Nullable``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Context, Decimal
from typing import Any, Final

from schemas.bus import UsageEvent

TABLE: Final = "requests"

COLUMNS: Final = (
    "timestamp",
    "request_id",
    "attempt",
    "key_id",
    "tenant",
    "user_id",
    "model",
    "provider",
    "deployment",
    "upstream_model",
    "priority",
    "stream",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "usage_estimated",
    "cost_usd",
    "latency_ms",
    "ttft_ms",
    "status",
    "error_type",
    "http_status",
    "finish_reason",
    "cache_hit",
    "batch_id",
    "final",
)

_UINT16: Final = 2**16 - 1
_UINT32: Final = 2**32 - 1
# Decimal(38, 12): at most 26 digits before the point.
_MAX_COST: Final = Decimal(10) ** 26
_COST_QUANTUM: Final = Decimal(1).scaleb(-12)
_COST_CONTEXT: Final = Context(prec=40)
# DateTime64(3) covers 1900-01-01 .. 2299-12-31.
_MIN_TS: Final = -2_208_988_800.0
_MAX_TS: Final = 10_413_791_999.0


class InvalidUsage(ValueError):
    """The event parsed but a value does not fit the table."""


def check(event: UsageEvent) -> None:
    """Raise ``InvalidUsage`` if a value does not fit its column."""
    if not event.request_id:
        raise InvalidUsage("request_id is empty")
    _check_range("attempt", event.attempt, 0, _UINT16)
    _check_range("http_status", event.http_status, 0, _UINT16)
    for name in ("prompt_tokens", "completion_tokens", "cached_tokens"):
        _check_range(name, getattr(event, name), 0, _UINT32)
    if not _MIN_TS <= event.ts <= _MAX_TS:
        raise InvalidUsage(f"ts {event.ts} is outside DateTime64(3)")
    if not event.cost_usd.is_finite() or abs(event.cost_usd) >= _MAX_COST:
        raise InvalidUsage(f"cost_usd {event.cost_usd} does not fit Decimal(38, 12)")


def to_row(event: UsageEvent) -> list[Any]:
    """The event's values in ``COLUMNS`` order; raise ``InvalidUsage`` if one does not fit."""
    check(event)
    return [
        datetime.fromtimestamp(event.ts, tz=UTC),
        event.request_id,
        event.attempt,
        event.key_id or "",
        event.tenant or "",
        event.user_id or "",
        event.model,
        event.provider,
        event.deployment,
        event.upstream_model,
        event.priority,
        event.stream,
        event.prompt_tokens,
        event.completion_tokens,
        event.cached_tokens,
        event.usage_estimated,
        event.cost_usd.quantize(_COST_QUANTUM, context=_COST_CONTEXT),
        event.latency_ms,
        event.ttft_ms,
        event.status,
        event.error_type,
        event.http_status,
        event.finish_reason,
        event.cache_hit,
        event.batch_id or "",
        event.final,
    ]


def _check_range(name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise InvalidUsage(f"{name} {value} is outside {low}..{high}")
