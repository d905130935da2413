"""ClickHouseStore against a real embedded chDB in a temporary directory."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest

from services.accounting.store import ClickHouseStore
from tests.unit.accounting.factories import total_cost, usage_event

COUNT_SQL = "SELECT count(), sum(cost_usd), uniqExact(request_id, attempt) FROM requests"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[ClickHouseStore]:
    opened = await ClickHouseStore.open(f"chdb://{tmp_path / 'ch'}", "igw")
    assert await opened.migrate() == [1, 2, 3]
    try:
        yield opened
    finally:
        await opened.close()


async def scalar_rows(store: ClickHouseStore, sql: str) -> list[object]:
    result = await store.query(sql, max_rows=100, timeout_s=10)
    assert result.error is None, result.error
    assert len(result.rows) == 1
    return result.rows[0]


async def test_migrate_is_idempotent(store: ClickHouseStore) -> None:
    assert await store.migrate() == []
    result = await store.query("SHOW TABLES", max_rows=100, timeout_s=10)
    assert {row[0] for row in result.rows} >= {"requests", "schema_migrations"}


async def test_insert_then_query_exact_decimal_sum(store: ClickHouseStore) -> None:
    events = [usage_event(i) for i in range(1, 101)]
    await store.insert_usage(events, "batch-1")
    count, cost, unique = await scalar_rows(store, COUNT_SQL)
    assert (count, unique) == (100, 100)
    assert Decimal(str(cost)) == total_cost(events)


async def test_row_values_round_trip(store: ClickHouseStore) -> None:
    event = usage_event(7, tenant=None, key_id=None, error_type="rate_limit", ttft_ms=None)
    await store.insert_usage([event], "one")
    result = await store.query(
        "SELECT timestamp, tenant, key_id, error_type, ttft_ms, cost_usd, stream FROM requests",
        max_rows=10,
        timeout_s=10,
    )
    assert result.error is None
    assert result.types[0] == "DateTime64(3, 'UTC')"
    assert result.rows == [
        ["2025-11-23T12:13:20.007000+00:00", "", "", "rate_limit", None, "0.000007000001", False]
    ]


async def test_same_event_in_two_batches_counts_once(store: ClickHouseStore) -> None:
    first, second = usage_event(1), usage_event(2)
    await store.insert_usage([first, second], "batch-a")
    await store.insert_usage([first], "batch-b")  # redelivered in a different batch
    count, cost, unique = await scalar_rows(store, COUNT_SQL)
    assert (count, unique) == (2, 2)
    assert Decimal(str(cost)) == first.cost_usd + second.cost_usd
    # The writer saw the attempt stored and did not insert it again, so even
    # without final=1, and in the rollups, it counts once.
    (raw,) = await scalar_rows(store, "SELECT count() FROM requests SETTINGS final = 0")
    assert raw == 2
    (rolled,) = await scalar_rows(store, "SELECT sum(requests) FROM usage_hour")
    assert rolled == 2


async def test_retried_batch_with_same_token_is_dropped(store: ClickHouseStore) -> None:
    events = [usage_event(i) for i in range(10)]
    await store.insert_usage(events, "batch-retry")
    await store.insert_usage(events, "batch-retry")
    (raw,) = await scalar_rows(store, "SELECT count() FROM requests SETTINGS final = 0")
    assert raw == 10  # the engine dropped the retried block itself


async def test_rollback_then_migrate_again(store: ClickHouseStore) -> None:
    await store.insert_usage([usage_event(1)], "before-rollback")
    assert await store.rollback(0) == [3, 2, 1]
    gone = await store.query("SELECT count() FROM requests", max_rows=10, timeout_s=10)
    assert gone.error is not None
    assert "UNKNOWN_TABLE" in gone.error
    assert await store.rollback(0) == []
    assert await store.migrate() == [1, 2, 3]
    await store.insert_usage([usage_event(2)], "after-rollback")
    assert await scalar_rows(store, "SELECT count() FROM requests") == [1]
    log = await store.query(
        "SELECT version, direction FROM schema_migrations ORDER BY seq", max_rows=10, timeout_s=10
    )
    ups = [[v, "up"] for v in (1, 2, 3)]
    assert log.rows == [*ups, [3, "down"], [2, "down"], [1, "down"], *ups]


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO requests (request_id) VALUES ('x')",
        "DROP TABLE requests",
        "SELECT 1; DROP TABLE requests",
        "SELECT * FROM file('/etc/hostname', 'LineAsString')",
    ],
)
async def test_guard_rejects_before_the_engine(store: ClickHouseStore, sql: str) -> None:
    result = await store.query(sql, max_rows=10, timeout_s=10)
    assert result.error is not None
    assert result.rows == []


async def test_reader_session_is_readonly_in_the_engine(store: ClickHouseStore) -> None:
    # The guard lets a SELECT through; the engine refuses to lower readonly.
    result = await store.query("SELECT 1 SETTINGS readonly = 0", max_rows=10, timeout_s=10)
    assert result.error is not None
    assert "READONLY" in result.error
    settings = await store.query(
        "SELECT getSetting('readonly'), getSetting('final')", max_rows=10, timeout_s=10
    )
    assert settings.rows == [[2, True]]


async def test_max_rows_truncates(store: ClickHouseStore) -> None:
    result = await store.query("SELECT number FROM numbers(100000)", max_rows=10, timeout_s=10)
    assert result.error is None
    assert result.rows == [[i] for i in range(10)]
    assert result.truncated
    exact = await store.query("SELECT number FROM numbers(10)", max_rows=10, timeout_s=10)
    assert len(exact.rows) == 10
    assert not exact.truncated


async def test_query_timeout_is_enforced_by_the_engine(store: ClickHouseStore) -> None:
    result = await store.query(
        "SELECT count() FROM numbers(100000000000) WHERE sipHash64(number) % 7 = 1",
        max_rows=10,
        timeout_s=0.3,
    )
    assert result.error is not None
    assert "TIMEOUT_EXCEEDED" in result.error


async def test_results_are_json_friendly(store: ClickHouseStore) -> None:
    result = await store.query(
        "SELECT toDecimal64(1.5, 3), toUUID('00000000-0000-0000-0000-000000000001'), "
        "toIPv4('10.0.0.1'), [1, 2], map('a', 1), toDate('2025-01-02')",
        max_rows=10,
        timeout_s=10,
    )
    assert result.error is None
    assert result.rows == [
        [
            "1.500",
            "00000000-0000-0000-0000-000000000001",
            "10.0.0.1",
            [1, 2],
            {"a": 1},
            "2025-01-02",
        ]
    ]
    assert result.model_dump_json()


async def test_second_process_cannot_open_the_store(store: ClickHouseStore, tmp_path: Path) -> None:
    code = (
        "import asyncio, sys\n"
        "from services.accounting.store import ClickHouseStore, StoreUnavailable\n"
        "try:\n"
        f"    asyncio.run(ClickHouseStore.open('chdb://{tmp_path / 'ch'}', 'igw'))\n"
        "except StoreUnavailable as exc:\n"
        "    print(exc); sys.exit(3)\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 3, stderr.decode()
    assert "Only one process may open it" in stdout.decode()
