"""Printing query results for ``igw sql``."""

from __future__ import annotations

import csv
import sys
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from schemas.bus import SqlResult


def print_result(result: SqlResult, fmt: str) -> None:
    if fmt == "json":
        payload = {"columns": result.columns, "types": result.types, "rows": result.rows}
        sys.stdout.write(orjson.dumps(payload, default=str).decode() + "\n")
        return
    if fmt == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(result.columns)
        writer.writerows(result.rows)
        return
    table = Table(*result.columns, show_lines=False)
    for row in result.rows:
        table.add_row(*(_cell(v) for v in row))
    console = Console()
    console.print(table)
    note = f"{len(result.rows)} row{'s' if len(result.rows) != 1 else ''}"
    if result.truncated:
        note += " (truncated; raise --max-rows)"
    console.print(f"[dim]{note} in {result.elapsed_ms:.1f} ms[/]")


def _cell(value: Any) -> str:
    return "NULL" if value is None else str(value)
