from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from services.accounting.rows import COLUMNS, InvalidUsage, to_row
from tests.unit.accounting.factories import usage_event


def test_row_follows_columns() -> None:
    row = dict(zip(COLUMNS, to_row(usage_event(3, tenant=None)), strict=True))
    assert row["timestamp"] == datetime(2025, 11, 23, 12, 13, 20, 3000, tzinfo=UTC)
    assert row["tenant"] == ""
    assert row["cost_usd"] == Decimal("0.000003000001")
    assert row["ttft_ms"] is None


def test_cost_is_rounded_to_twelve_places_without_float() -> None:
    row = dict(
        zip(COLUMNS, to_row(usage_event(1, cost_usd=Decimal("1.23456789012345"))), strict=True)
    )
    assert row["cost_usd"] == Decimal("1.234567890123")
    big = Decimal("12345678901234567890123456.123456789012")
    row = dict(zip(COLUMNS, to_row(usage_event(1, cost_usd=big)), strict=True))
    assert row["cost_usd"] == big


@pytest.mark.parametrize(
    "overrides",
    [
        {"request_id": ""},
        {"attempt": -1},
        {"attempt": 70_000},
        {"prompt_tokens": -5},
        {"completion_tokens": 2**32},
        {"http_status": 100_000},
        {"ts": 1e12},
        {"cost_usd": Decimal(10) ** 27},
    ],
)
def test_values_that_do_not_fit_are_rejected(overrides: dict[str, Any]) -> None:
    with pytest.raises(InvalidUsage):
        to_row(usage_event(1, **overrides))
