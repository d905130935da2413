"""Rollups against a real embedded chDB: the views fill them, and a rebuild from
the table reproduces exactly what the views wrote (so repairing a day after a
crash changes nothing but what was lost)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from schemas.bus import UsageEvent
from services.accounting import rollups
from services.accounting.store import ClickHouseStore

SNAPSHOT = """
SELECT bucket, tenant, key_id, model, deployment, sum(requests), sum(attempts), sum(errors),
       sum(cache_hits), sum(prompt_tokens), sum(completion_tokens), sum(cost_usd),
       quantilesMerge(0.5, 0.95, 0.99)(latency_ms), quantilesMerge(0.5, 0.95, 0.99)(ttft_ms)
FROM {table}
GROUP BY bucket, tenant, key_id, model, deployment
ORDER BY bucket, tenant, key_id, model, deployment
"""


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[ClickHouseStore]:
    opened = await ClickHouseStore.open(f"chdb://{tmp_path / 'ch'}", "igw")
    await opened.migrate()
    try:
        yield opened
    finally:
        await opened.close()


def event(i: int) -> UsageEvent:
    return UsageEvent(
        request_id=f"req-{i // 2}",
        attempt=1 + i % 2,
        ts=time.time() - i * 37,
        key_id=f"key-{i % 3}",
        tenant=f"team-{i % 2}",
        model=("sim", "sim-echo")[i % 2],
        provider="openai",
        deployment=("sim", "sim-echo")[i % 2],
        upstream_model="sim",
        prompt_tokens=10 + i,
        completion_tokens=20 + i,
        cost_usd=Decimal("0.000123") * (i + 1),
        latency_ms=float(5 + i),
        ttft_ms=float(i) if i % 3 else None,
        status="error" if i % 5 == 0 else "ok",
        final=i % 2 == 1,
        cache_hit=i % 7 == 0,
    )


async def snapshot(store: ClickHouseStore, table: str) -> list[Any]:
    result = await store.query(SNAPSHOT.format(table=table), max_rows=10_000, timeout_s=30)
    assert result.error is None, result.error
    return [[_comparable(v) for v in row] for row in result.rows]


def _comparable(value: Any) -> Any:
    """Quantiles of no values are nan, which never equals itself."""
    if isinstance(value, list):
        return [None if v != v else v for v in value]
    return value


async def test_a_rebuild_reproduces_what_the_views_wrote(store: ClickHouseStore) -> None:
    await store.insert_usage([event(i) for i in range(120)], "seed")
    tables = [f"usage_{grain}" for grain in rollups.GRAINS]
    before = {t: await snapshot(store, t) for t in tables}
    assert all(before.values())
    assert await store.reconcile_rollups(timedelta(days=2)) == []  # nothing to repair

    writer: Any = store._writer  # the rebuild itself, on every day the seed covers
    days = sorted({datetime.fromtimestamp(event(i).ts, UTC).date() for i in range(120)})
    for day in days:
        rollups.rebuild_day(writer, day)
    assert {t: await snapshot(store, t) for t in tables} == before


async def test_a_lost_rollup_push_is_repaired_at_start_up(store: ClickHouseStore) -> None:
    await store.insert_usage([event(i) for i in range(40)], "seed")
    before = await snapshot(store, "usage_hour")
    writer: Any = store._writer
    for grain in rollups.GRAINS:  # as if the process died between the table and the views
        writer.command(f"ALTER TABLE usage_{grain} DELETE WHERE 1", settings={"mutations_sync": 2})
    assert await snapshot(store, "usage_hour") == []
    repaired = await store.reconcile_rollups(timedelta(days=2))
    assert repaired
    assert await snapshot(store, "usage_hour") == before
