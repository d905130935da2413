from __future__ import annotations

from pathlib import Path

from rich.console import Console

from schemas.bus import SqlResult
from services.accounting.sql_client import render, run_sql
from services.runtime.natsserver import free_port
from services.runtime.settings import ClickHouseSettings, NatsSettings, Settings


def text_of(result: SqlResult) -> str:
    console = Console(record=True, width=120)
    console.print(render(result))
    return console.export_text()


def test_render_rows_types_and_caption() -> None:
    result = SqlResult(
        columns=["tenant", "spend"],
        types=["LowCardinality(String)", "Nullable(Decimal(38, 12))"],
        rows=[["tenant-a", "1.500000000000"], ["tenant-b", None]],
        truncated=True,
        elapsed_ms=4.25,
    )
    text = text_of(result)
    assert "tenant-a" in text
    assert "1.500000000000" in text
    assert "NULL" in text
    assert "Decimal(38, 12)" in text
    assert "2 rows in 4.2 ms (truncated" in text


def test_render_error() -> None:
    text = text_of(SqlResult(error="Code: 60. Unknown table"))
    assert "query failed" in text
    assert "Unknown table" in text


async def test_embedded_without_nats_says_the_service_is_not_running(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        nats=NatsSettings(url=f"nats://127.0.0.1:{free_port()}", connect_timeout_s=0.3),
        clickhouse=ClickHouseSettings(dsn=f"chdb://{tmp_path / 'ch'}"),
    )
    result = await run_sql(settings, "SELECT 1")
    assert result.error is not None
    assert "the accounting service is not running" in result.error
