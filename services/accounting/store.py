"""ClickHouse behind one small interface: migrate, insert usage, answer read-only SQL.

``ClickHouseStore`` speaks to the embedded engine (``chdb:///abs/path``) and to
a server (``http(s)://...``) through the same clickhouse-connect calls. Those
calls are synchronous, so each connection lives on its own single thread:

* the writer (migrations and inserts) on ``igw-ch-write``;
* the reader (analyst queries) on ``igw-ch-read``, a separate connection whose
  session is ``readonly=2`` for good: writes and DDL fail, per-query settings
  such as ``final=1`` still apply, and ``readonly`` itself cannot be lowered.

One thread per connection serializes every call on it (clickhouse-connect's
chDB backend must not see two calls on one handle); chDB runs calls on
different handles in parallel, so a slow analyst query never holds up an
insert. Only one process may open an embedded store: a second one fails with
``StoreUnavailable``.

Contract: ``query`` never raises for a bad query; the reason is in
``SqlResult.error``. ``insert_usage`` raises on failure and returns only after
the engine stored the rows (``async_insert=0``); it never inserts an attempt
that is already stored.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timedelta
from datetime import time as dt_time
from decimal import Decimal
from functools import partial
from typing import Any, Final, Protocol, TypeVar

import clickhouse_connect
from clickhouse_connect.driver.exceptions import ClickHouseError

from schemas.bus import SqlResult, UsageEvent
from services.accounting import migrate as migrations
from services.accounting import rollups
from services.accounting.rows import COLUMNS, TABLE, to_row
from services.accounting.sql_guard import ReadOnlyViolation, check_read_only
from services.runtime.errors import StartupError

log = logging.getLogger("igw.accounting.store")

T = TypeVar("T")

INSERT_SETTINGS: Final = {
    "async_insert": 0,
    "wait_for_async_insert": 1,
    "insert_deduplicate": 1,
    "deduplicate_blocks_in_dependent_materialized_views": 1,
}
# Time for the engine to notice max_execution_time before the caller gives up.
QUERY_GRACE_S: Final = 5.0
_MAX_ERROR_CHARS: Final = 2000


class StoreUnavailable(StartupError):
    """The store could not be opened or reached."""


class UsageStore(Protocol):
    """Where usage rows go and analyst queries come from."""

    async def migrate(self) -> list[int]:
        """Apply pending migrations; return the versions applied now."""
        ...

    async def insert_usage(self, events: Sequence[UsageEvent], dedup_token: str) -> None:
        """Store the events; retrying with the same token stores them once. Raises on failure."""
        ...

    async def query(self, sql: str, max_rows: int, timeout_s: float) -> SqlResult:
        """Run one read-only statement; failures are reported in ``SqlResult.error``."""
        ...

    async def close(self) -> None: ...


class ClickHouseStore:
    """``UsageStore`` on ClickHouse; create it with ``await ClickHouseStore.open(...)``."""

    def __init__(
        self,
        writer: Any,
        reader: Any,
        write_thread: ThreadPoolExecutor,
        read_thread: ThreadPoolExecutor,
    ) -> None:
        self._writer = writer
        self._reader = reader
        self._write_thread = write_thread
        self._read_thread = read_thread

    @classmethod
    async def open(cls, dsn: str, database: str, *, write: bool = True) -> ClickHouseStore:
        """Connect (creating ``database`` if ``write``); raise ``StoreUnavailable`` on failure."""
        write_thread = ThreadPoolExecutor(1, thread_name_prefix="igw-ch-write")
        read_thread = ThreadPoolExecutor(1, thread_name_prefix="igw-ch-read")
        writer: Any = None
        try:
            if write:
                writer = await _on(write_thread, partial(_open_writer, dsn, database))
            reader = await _on(read_thread, partial(_open_reader, dsn, database))
        except Exception as exc:
            if writer is not None:
                await _on(write_thread, writer.close)
            write_thread.shutdown()
            read_thread.shutdown()
            raise StoreUnavailable(_open_failure(dsn, exc)) from exc
        return cls(writer, reader, write_thread, read_thread)

    async def migrate(self) -> list[int]:
        return await _on(self._write_thread, partial(migrations.migrate, self._writer_client()))

    async def apply_ttl(self, tables: dict[str, int | None]) -> None:
        """Keep each table's rows for the given days (None: keep them all), as set
        in config; applied at every start, so changing the setting takes effect."""
        await _on(self._write_thread, partial(_apply_ttl, self._writer_client(), tables))

    async def reconcile_rollups(
        self, window: timedelta, minute_ttl_days: int | None = None
    ) -> list[date]:
        """Rebuild days whose rollups disagree with the table (see ``rollups``)."""
        client = self._writer_client()
        run = partial(rollups.reconcile, client, window, minute_ttl_days)
        return await _on(self._write_thread, run)

    async def rollback(self, to_version: int) -> list[int]:
        client = self._writer_client()
        return await _on(self._write_thread, partial(migrations.rollback, client, to_version))

    async def insert_usage(self, events: Sequence[UsageEvent], dedup_token: str) -> None:
        if events:
            await _on(self._write_thread, partial(self._insert, list(events), dedup_token))

    async def query(self, sql: str, max_rows: int, timeout_s: float) -> SqlResult:
        started = time.perf_counter()
        try:
            statement = check_read_only(sql)
        except ReadOnlyViolation as exc:
            return SqlResult(error=str(exc))
        settings = {
            "final": 1,
            "max_execution_time": timeout_s,
            "max_result_rows": max_rows + 1,
            "result_overflow_mode": "break",
        }
        run = partial(self._reader.query, statement, settings=settings)
        try:
            async with asyncio.timeout(timeout_s + QUERY_GRACE_S):
                result = await _on(self._read_thread, run)
        except ClickHouseError as exc:
            return SqlResult(error=_describe(exc), elapsed_ms=_ms_since(started))
        except TimeoutError:
            return SqlResult(
                error=f"the query did not finish within {timeout_s:g} s",
                elapsed_ms=_ms_since(started),
            )
        rows = result.result_rows
        return SqlResult(
            columns=list(result.column_names),
            types=[t.name for t in result.column_types],
            rows=[[_jsonable(v) for v in row] for row in rows[:max_rows]],
            truncated=len(rows) > max_rows,
            elapsed_ms=_ms_since(started),
        )

    async def close(self) -> None:
        try:
            if self._writer is not None:
                await _on(self._write_thread, self._writer.close)
            await _on(self._read_thread, self._reader.close)
        finally:
            self._write_thread.shutdown()
            self._read_thread.shutdown()

    def _writer_client(self) -> Any:
        if self._writer is None:
            raise StoreUnavailable("this store was opened read-only")
        return self._writer

    def _insert(self, events: list[UsageEvent], dedup_token: str) -> None:
        fresh = self._not_stored(events)
        if not fresh:
            return
        self._writer_client().insert(
            TABLE,
            [to_row(event) for event in fresh],
            column_names=list(COLUMNS),
            settings={**INSERT_SETTINGS, "insert_deduplication_token": dedup_token},
        )

    def _not_stored(self, events: list[UsageEvent]) -> list[UsageEvent]:
        """The events whose attempt is not in the table yet (a redelivered event
        whose first insert succeeded is dropped here, so the rollups, which see
        every inserted block, count it once)."""
        ids = sorted({e.request_id for e in events})
        stored = self._writer_client().query(
            f"SELECT request_id, attempt FROM {TABLE} WHERE request_id IN {{ids:Array(String)}}",
            parameters={"ids": ids},
        )
        seen = {(row[0], row[1]) for row in stored.result_rows}
        return [e for e in events if (e.request_id, e.attempt) not in seen]


async def _on(thread: ThreadPoolExecutor, call: Callable[[], T]) -> T:
    return await asyncio.get_running_loop().run_in_executor(thread, call)


def _open_writer(dsn: str, database: str) -> Any:
    client = clickhouse_connect.get_client(dsn=dsn)
    try:
        client.command(f"CREATE DATABASE IF NOT EXISTS {_quote(database)}", use_database=False)
    except Exception:
        client.close()
        raise
    client.database = database
    return client


def _open_reader(dsn: str, database: str) -> Any:
    # tz_mode="aware": timestamps come back with their zone, so ISO strings are unambiguous.
    return clickhouse_connect.get_client(
        dsn=dsn, database=database, settings={"readonly": 2}, tz_mode="aware"
    )


def _apply_ttl(client: Any, tables: dict[str, int | None]) -> None:
    for table, days in tables.items():
        column = "timestamp" if table == TABLE else "bucket"
        current = client.query(
            "SELECT create_table_query FROM system.tables"
            " WHERE database = currentDatabase() AND name = {t:String}",
            parameters={"t": table},
        ).result_rows
        if not current:
            continue
        has_ttl = " TTL " in current[0][0]
        if days is not None:
            ttl = f"toDateTime({column}) + INTERVAL {int(days)} DAY"
            client.command(f"ALTER TABLE {_quote(table)} MODIFY TTL {ttl}")
        elif has_ttl:
            client.command(f"ALTER TABLE {_quote(table)} REMOVE TTL")


def _quote(identifier: str) -> str:
    return "`" + identifier.replace("\\", "\\\\").replace("`", "\\`") + "`"


def _open_failure(dsn: str, exc: Exception) -> str:
    if dsn.startswith("chdb:"):
        return (
            f"cannot open the embedded ClickHouse store {dsn}: {_describe(exc)}. Only one "
            "process may open it; if the accounting service is running, query through it "
            "(igw sql) instead of opening the store"
        )
    return f"cannot connect to ClickHouse at {_redact(dsn)}: {_describe(exc)}"


def _redact(dsn: str) -> str:
    scheme, sep, rest = dsn.partition("://")
    credentials, at, host = rest.rpartition("@")
    return f"{scheme}{sep}***@{host}" if at and credentials else dsn


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:_MAX_ERROR_CHARS]


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


def _jsonable(value: Any) -> Any:
    """A result value as JSON-friendly data, the same whether it crosses NATS or not."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date | dt_time):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)
