"""Numbered schema migrations, each with an up and a down (rollback) script.

Files live in ``services/accounting/migrations`` as ``NNN_name.up.sql`` and
``NNN_name.down.sql`` and ship as package data. Applied versions are recorded
in ``schema_migrations``, an append-only log of ``up`` and ``down`` entries:
a version is applied when its latest entry is ``up``. ClickHouse DDL is not
transactional, so scripts use ``IF [NOT] EXISTS`` and a failed migration can
simply be run again.

The functions here are synchronous and take a clickhouse-connect client; the
store calls them on its writer thread.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final, Protocol

from services.accounting.sqltext import split_statements

log = logging.getLogger("igw.accounting.migrate")

LOG_TABLE: Final = "schema_migrations"
_LOG_DDL: Final = f"""
CREATE TABLE IF NOT EXISTS {LOG_TABLE}
(
    seq       UInt64,
    version   UInt32,
    name      String,
    direction Enum8('up' = 1, 'down' = 2),
    at        DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
ORDER BY seq
"""
_FILE = re.compile(r"^(\d{3})_([a-z0-9_]+)\.(up|down)\.sql$")
_INSERT_SETTINGS: Final = {"async_insert": 0, "wait_for_async_insert": 1}


class MigrationError(Exception):
    """The migration files are inconsistent, or a script failed."""


class SqlClient(Protocol):
    """The part of a clickhouse-connect client that migrations use."""

    def command(self, cmd: str) -> Any: ...

    def query(self, query: str) -> Any: ...

    def insert(
        self, table: str, data: list[list[Any]], column_names: list[str], settings: dict[str, Any]
    ) -> Any: ...


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    up: str
    down: str


def load_migrations() -> list[Migration]:
    """The packaged migrations in version order; raise ``MigrationError`` if a file is missing."""
    folder = resources.files("services.accounting").joinpath("migrations")
    scripts: dict[tuple[int, str], dict[str, str]] = {}
    for entry in folder.iterdir():
        match = _FILE.match(entry.name)
        if match is None:
            continue
        key = (int(match.group(1)), match.group(2))
        scripts.setdefault(key, {})[match.group(3)] = entry.read_text(encoding="utf-8")
    migrations: list[Migration] = []
    for (version, name), parts in sorted(scripts.items()):
        if set(parts) != {"up", "down"}:
            raise MigrationError(f"migration {version:03d}_{name} needs both .up.sql and .down.sql")
        migrations.append(Migration(version, name, parts["up"], parts["down"]))
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migrations share a version number: {versions}")
    return migrations


def applied_versions(client: SqlClient) -> list[int]:
    client.command(_LOG_DDL)
    result = client.query(
        f"SELECT version FROM {LOG_TABLE} GROUP BY version "
        "HAVING argMax(direction, seq) = 'up' ORDER BY version"
    )
    return [int(row[0]) for row in result.result_rows]


def migrate(client: SqlClient, migrations: list[Migration] | None = None) -> list[int]:
    """Apply every pending migration in order; return the versions applied now."""
    migrations = load_migrations() if migrations is None else migrations
    applied = set(applied_versions(client))
    unknown = applied - {m.version for m in migrations}
    if unknown:
        log.warning("the database has migrations this code does not know: %s", sorted(unknown))
    done: list[int] = []
    for migration in migrations:
        if migration.version in applied:
            continue
        _run(client, migration, "up")
        done.append(migration.version)
    return done


def rollback(
    client: SqlClient, to_version: int, migrations: list[Migration] | None = None
) -> list[int]:
    """Undo applied migrations newer than ``to_version``, newest first; return them."""
    migrations = load_migrations() if migrations is None else migrations
    applied = set(applied_versions(client))
    undone: list[int] = []
    for migration in sorted(migrations, key=lambda m: m.version, reverse=True):
        if migration.version <= to_version or migration.version not in applied:
            continue
        _run(client, migration, "down")
        undone.append(migration.version)
    return undone


def _run(client: SqlClient, migration: Migration, direction: str) -> None:
    label = f"{migration.version:03d}_{migration.name}.{direction}"
    script = migration.up if direction == "up" else migration.down
    try:
        for statement in split_statements(script):
            client.command(statement)
    except Exception as exc:
        raise MigrationError(f"migration {label} failed: {exc}") from exc
    seq = int(client.query(f"SELECT max(seq) + 1 FROM {LOG_TABLE}").result_rows[0][0])
    client.insert(
        LOG_TABLE,
        [[seq, migration.version, migration.name, direction]],
        column_names=["seq", "version", "name", "direction"],
        settings=_INSERT_SETTINGS,
    )
    log.info("applied migration %s", label)
