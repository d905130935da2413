"""Read-only SQL for the CLI: ``run_sql`` gets a ``SqlResult``, ``render`` draws it.

With the embedded engine only the accounting process may open the store, so
the query travels over NATS request/reply to it. With a ClickHouse server the
query goes straight to the server through the same ``ClickHouseStore``.
Failures come back in ``SqlResult.error``; ``run_sql`` does not raise for them.
"""

from __future__ import annotations

import asyncio
from typing import Final

import nats.errors
from rich.console import JustifyMethod
from rich.table import Table
from rich.text import Text

from schemas.bus import SqlQuery, SqlResult
from schemas.subjects import ACCOUNTING_SQL
from services.accounting.store import ClickHouseStore, StoreUnavailable
from services.runtime.bus import BusUnavailable, connect
from services.runtime.settings import Settings

REPLY_MARGIN_S: Final = 5.0
CONNECT_MARGIN_S: Final = 0.5
NOT_RUNNING: Final = (
    "the accounting service is not running: with the embedded ClickHouse store, SQL is "
    "answered by it (start it with `igw up` or `igw accounting`)"
)


async def run_sql(settings: Settings, sql: str, max_rows: int | None = None) -> SqlResult:
    ch = settings.clickhouse
    rows = max_rows if max_rows is not None else ch.max_result_rows
    if settings.clickhouse_embedded:
        request = SqlQuery(sql=sql, max_rows=rows, timeout_s=ch.query_timeout_s)
        return await _over_nats(settings, request)
    try:
        store = await ClickHouseStore.open(settings.clickhouse_dsn, ch.database, write=False)
    except StoreUnavailable as exc:
        return SqlResult(error=str(exc))
    try:
        return await store.query(sql, max_rows=rows, timeout_s=ch.query_timeout_s)
    finally:
        await store.close()


async def _over_nats(settings: Settings, request: SqlQuery) -> SqlResult:
    try:
        # connect() retries forever while the server is down (unlimited
        # reconnects also apply to the first connect in nats-py): bound it.
        async with asyncio.timeout(settings.nats.connect_timeout_s + CONNECT_MARGIN_S):
            nc = await connect(settings, "sql-client")
    except (BusUnavailable, TimeoutError):
        return SqlResult(error=f"cannot reach NATS at {settings.nats.url}; {NOT_RUNNING}")
    timeout = request.timeout_s + REPLY_MARGIN_S
    payload = request.model_dump_json().encode()
    try:
        reply = await nc.request(ACCOUNTING_SQL, payload, timeout=timeout)
    except nats.errors.NoRespondersError:
        return SqlResult(error=NOT_RUNNING)
    except nats.errors.TimeoutError:
        return SqlResult(error=f"the accounting service did not answer within {timeout:g} s")
    finally:
        await nc.close()
    return SqlResult.model_validate_json(reply.data)


def render(result: SqlResult) -> Table:
    """A rich table of the rows; errors and truncation are in the title and caption."""
    if result.error is not None:
        table = Table(title=Text("query failed", style="bold red"), show_header=False)
        table.add_column("error", style="red", overflow="fold")
        table.add_row(result.error)
        return table
    count = len(result.rows)
    caption = f"{count} row{'' if count == 1 else 's'} in {result.elapsed_ms:.1f} ms"
    if result.truncated:
        caption += " (truncated: more rows matched)"
    table = Table(caption=caption)
    types = result.types if len(result.types) == len(result.columns) else [""] * len(result.columns)
    for name, type_name in zip(result.columns, types, strict=True):
        header = Text(name)
        if type_name:
            header.append(f"\n{type_name}", style="dim")
        justify: JustifyMethod = "right" if _numeric(type_name) else "left"
        table.add_column(header, justify=justify, overflow="fold")
    for row in result.rows:
        table.add_row(*(_cell(value) for value in row))
    return table


def _numeric(type_name: str) -> bool:
    while type_name.startswith(("Nullable(", "LowCardinality(")):
        type_name = type_name[type_name.index("(") + 1 :]
    return type_name.startswith(("Int", "UInt", "Float", "Decimal"))


def _cell(value: object) -> Text:
    if value is None:
        return Text("NULL", style="dim")
    return Text(str(value))
