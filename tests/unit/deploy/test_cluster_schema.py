"""The cluster schema in deploy/clickhouse/cluster against the embedded one.

The embedded tables come from migrating a chDB store (system.columns and
system.tables); the cluster DDL is only text here, since chDB has no cluster.
The last test rewrites that DDL for one node and runs it in a separate process.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.accounting.migrate import load_migrations
from services.accounting.sqltext import code_view, scan, split_statements
from services.accounting.store import ClickHouseStore

ROOT = Path(__file__).parents[3]
CLUSTER = ROOT / "deploy" / "clickhouse" / "cluster"
SQL_FILES = sorted(CLUSTER.glob("*.sql"))
UP_FILES = sorted(CLUSTER.glob("*.up.sql"))
ROLLUPS = ("usage_minute", "usage_hour", "usage_day")
ON_CLUSTER = "ON CLUSTER '{cluster}'"


def statements(paths: list[Path]) -> list[str]:
    return [s for path in paths for s in split_statements(path.read_text(encoding="utf-8"))]


def create(name: str) -> str:
    """The statement in the up files that creates ``igw.<name>``, without the
    comment lines before it."""
    pattern = re.compile(
        rf"^\s*CREATE (TABLE|MATERIALIZED VIEW) IF NOT EXISTS igw\.{name}\s", re.IGNORECASE
    )
    found = [s for s in statements(UP_FILES) if pattern.match(code_view(s))]
    assert len(found) == 1, f"expected one CREATE for igw.{name}, found {len(found)}"
    return without_comments(found[0]).strip()


def without_comments(sql: str) -> str:
    return "".join(text for kind, text in scan(sql) if kind != "comment")


def column_lines(ddl: str) -> dict[str, str]:
    """Column name -> its definition line, from a CREATE TABLE's column list."""
    body = ddl[ddl.index("(") + 1 : ddl.index("\n)\nENGINE")]
    lines = [line.strip().rstrip(",") for line in body.splitlines() if line.strip()]
    return {line.split()[0]: line for line in lines if not line.startswith("INDEX ")}


def has_line(ddl: str, line: str) -> bool:
    return line in ddl.splitlines()


def squeeze(sql: str) -> str:
    """SQL text without whitespace or parentheses, to compare expressions the engine
    re-formats (it adds parentheses around sub-expressions)."""
    return re.sub(r"[\s()]", "", sql)


@pytest.fixture(scope="module")
async def store(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ClickHouseStore]:
    path = tmp_path_factory.mktemp("cluster-schema") / "ch"
    opened = await ClickHouseStore.open(f"chdb://{path}", "igw")
    try:
        await opened.migrate()
        yield opened
    finally:
        await opened.close()


async def rows(store: ClickHouseStore, sql: str) -> list[list[object]]:
    result = await store.query(sql, max_rows=1000, timeout_s=30)
    assert result.error is None, result.error
    return result.rows


async def embedded_columns(store: ClickHouseStore, table: str) -> list[list[object]]:
    return await rows(
        store,
        "SELECT name, type, default_kind, default_expression FROM system.columns"
        f" WHERE database = currentDatabase() AND table = '{table}' ORDER BY position",
    )


async def embedded_keys(store: ClickHouseStore, table: str) -> tuple[str, str]:
    ((partition, sorting),) = await rows(
        store,
        "SELECT partition_key, sorting_key FROM system.tables"
        f" WHERE database = currentDatabase() AND name = '{table}'",
    )
    return str(partition), str(sorting)


@pytest.mark.parametrize("path", SQL_FILES, ids=[p.name for p in SQL_FILES])
def test_files_parse_into_cluster_statements(path: Path) -> None:
    found = split_statements(path.read_text(encoding="utf-8"))
    assert found
    for statement in found:
        code = code_view(statement)
        assert code.split()[0].upper() in ("CREATE", "DROP"), code[:60]
        assert ON_CLUSTER in statement, f"not a cluster statement: {code.strip()[:60]}"
        assert "igw." in code or "DATABASE" in code, "tables are named with their database"


def test_every_up_file_has_a_down_file() -> None:
    assert UP_FILES
    for up in UP_FILES:
        assert up.with_name(up.name.replace(".up.", ".down.")).exists(), up.name


async def test_requests_local_has_every_embedded_column(store: ClickHouseStore) -> None:
    ddl = create("requests_local")
    cluster = column_lines(ddl)
    embedded = await embedded_columns(store, "requests")
    assert [row[0] for row in embedded] == list(cluster), "same columns in the same order"
    for name, type_, default_kind, default_expression in embedded:
        line = cluster[str(name)]
        assert re.match(rf"^{name}\s+{re.escape(str(type_))}(\s|$)", line), (
            f"{name}: expected type {type_}, got {line!r}"
        )
        if default_kind:
            _, found, expression = line.partition(f" {default_kind} ")
            assert found, f"{name}: expected {default_kind} {default_expression}"
            assert squeeze(expression).startswith(squeeze(str(default_expression))), name
    assert "ENGINE = ReplicatedReplacingMergeTree(inserted_at)" in ddl
    partition, sorting = await embedded_keys(store, "requests")
    assert has_line(ddl, f"PARTITION BY {partition}")
    assert has_line(ddl, f"ORDER BY ({sorting})")


def test_requests_is_distributed_by_request_id() -> None:
    ddl = create("requests")
    assert "AS igw.requests_local" in ddl
    assert "ENGINE = Distributed('{cluster}', igw, requests_local, cityHash64(request_id))" in ddl


@pytest.mark.parametrize("rollup", ROLLUPS)
async def test_rollups_match_the_embedded_ones(store: ClickHouseStore, rollup: str) -> None:
    local = create(f"{rollup}_local")
    cluster = column_lines(local)
    embedded = await embedded_columns(store, rollup)
    assert [row[0] for row in embedded] == list(cluster)
    for name, type_, *_ in embedded:
        assert re.match(rf"^{name}\s+{re.escape(str(type_))}$", cluster[str(name)]), name
    assert has_line(local, "ENGINE = ReplicatedAggregatingMergeTree")
    partition, sorting = await embedded_keys(store, rollup)
    assert has_line(local, f"PARTITION BY {partition}")
    assert has_line(local, f"ORDER BY ({sorting})")

    distributed = create(rollup)
    assert f"AS igw.{rollup}_local" in distributed
    assert f"ENGINE = Distributed('{{cluster}}', igw, {rollup}_local)" in distributed

    view = create(f"{rollup}_mv")
    assert f"TO igw.{rollup}_local AS" in view
    assert "FROM igw.requests_local" in view
    (embedded_view,) = [
        without_comments(s)
        for m in load_migrations()
        for s in split_statements(m.up)
        if f"VIEW IF NOT EXISTS {rollup}_mv " in s
    ]
    select = embedded_view[embedded_view.index("SELECT") :]
    cluster_select = view[view.index("SELECT") :]
    local_select = select.replace("FROM requests", "FROM igw.requests_local")
    assert squeeze(cluster_select) == squeeze(local_select), "the views select the same"


# Run in a fresh interpreter: chDB allows one engine path per process, and this
# module's store already holds one.
SINGLE_NODE_CHECK = r"""
import json, re, sys, tempfile, time
import clickhouse_connect
from services.accounting.rows import COLUMNS, to_row
from services.accounting.sqltext import split_statements
from tests.unit.accounting.factories import usage_event

client = clickhouse_connect.get_client(dsn=f"chdb://{tempfile.mkdtemp()}/ch")
for path in sys.argv[1:]:
    for statement in split_statements(open(path, encoding="utf-8").read()):
        statement = statement.replace(" ON CLUSTER '{cluster}'", "")
        statement = re.sub(r"Replicated(\w*MergeTree)", r"\1", statement)
        statement = re.sub(
            r"ENGINE = Distributed\('\{cluster\}', igw, (\w+).*\)$",
            r"ENGINE = Merge(igw, '^\1$')",
            statement,
            flags=re.DOTALL,
        )
        client.command(statement)
now = time.time() - 3600
events = [usage_event(i, ts=now + i, final=i % 5 != 0) for i in range(1, 101)]
client.insert("igw.requests_local", [to_row(e) for e in events], column_names=list(COLUMNS))
result = {
    "requests": client.query(
        "SELECT countIf(final), count(), toString(sum(cost_usd)) FROM igw.requests FINAL"
    ).result_rows[0],
}
for rollup in ("usage_minute", "usage_hour", "usage_day"):
    result[rollup] = client.query(
        f"SELECT sum(requests), sum(attempts), toString(sum(cost_usd)) FROM igw.{rollup}"
    ).result_rows[0]
print(json.dumps({k: list(v) for k, v in result.items()}))
"""


def test_the_cluster_schema_rewritten_for_one_node_runs() -> None:
    """ON CLUSTER dropped, Replicated* engines made plain, Distributed tables made
    Merge tables over their local tables: the DDL runs, and the views fill the
    rollups with what requests_local holds."""
    done = subprocess.run(
        [sys.executable, "-c", SINGLE_NODE_CHECK, *map(str, UP_FILES)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["requests"][:2] == [80, 100]
    for rollup in ROLLUPS:
        assert result[rollup] == result["requests"], rollup
