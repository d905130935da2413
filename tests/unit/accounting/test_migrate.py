"""Migrations against a real embedded chDB client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import clickhouse_connect
import pytest

from services.accounting.migrate import (
    Migration,
    MigrationError,
    applied_versions,
    load_migrations,
    migrate,
    rollback,
)

EXTRA = Migration(
    version=9,
    name="add_notes",
    up="-- add a column\nALTER TABLE requests ADD COLUMN IF NOT EXISTS notes String;",
    down="ALTER TABLE requests DROP COLUMN IF EXISTS notes;",
)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[Any]:
    ch = clickhouse_connect.get_client(dsn=f"chdb://{tmp_path / 'ch'}")
    try:
        yield ch
    finally:
        ch.close()


def columns(client: Any) -> list[str]:
    rows = client.query(
        "SELECT name FROM system.columns WHERE database = currentDatabase() AND table = 'requests'"
    ).result_rows
    return [row[0] for row in rows]


def test_packaged_migrations_have_up_and_down() -> None:
    migrations = load_migrations()
    assert [m.version for m in migrations] == [1, 2, 3]
    assert "ReplacingMergeTree" in migrations[0].up
    assert "DROP TABLE" in migrations[0].down
    assert "DROP COLUMN IF EXISTS user_id" in migrations[1].down
    assert "MATERIALIZED VIEW" in migrations[2].up and "DROP VIEW" in migrations[2].down


def test_apply_in_order_and_roll_back_partially(client: Any) -> None:
    all_migrations = [*load_migrations(), EXTRA]
    assert migrate(client, all_migrations) == [1, 2, 3, 9]
    assert applied_versions(client) == [1, 2, 3, 9]
    assert "notes" in columns(client) and "user_id" in columns(client)

    assert rollback(client, 1, all_migrations) == [9, 3, 2]
    assert applied_versions(client) == [1]
    assert "notes" not in columns(client) and "user_id" not in columns(client)
    assert "request_id" in columns(client)

    assert migrate(client, all_migrations) == [2, 3, 9]
    assert rollback(client, 0, all_migrations) == [9, 3, 2, 1]
    assert applied_versions(client) == []
    assert columns(client) == []


def test_a_failing_script_is_not_recorded(client: Any) -> None:
    broken = Migration(
        version=9, name="broken", up="ALTER TABLE nowhere ADD COLUMN x String", down=""
    )
    with pytest.raises(MigrationError, match=r"009_broken\.up failed"):
        migrate(client, [*load_migrations(), broken])
    assert applied_versions(client) == [1, 2, 3]
