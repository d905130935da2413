"""The Grafana dashboards in deploy/grafana: their JSON model, and every panel's SQL
run against the embedded engine holding a known set of usage events."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from schemas.bus import UsageEvent
from services.accounting.store import ClickHouseStore
from tests.unit.accounting.factories import BASE_TS, usage_event
from tests.unit.deploy.macros import TimeRange, expand

GRAFANA = Path(__file__).parents[3] / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
PLUGIN = "grafana-clickhouse-datasource"

DAY = int(BASE_TS // 86_400) * 86_400  # 00:00 UTC of the seeded day
WINDOW = TimeRange(start=DAY, end=DAY + 86_399, interval_s=3600)
ROLLUPS = ("usage_minute", "usage_hour", "usage_day")
RETRIED = (5, 17)
DEPLOYMENTS = (
    ("gpt-4o", "openai", "openai-gpt-4o"),
    ("claude", "anthropic", "anthropic-claude"),
    ("sim", "openai", "simulator"),
)


def seeded_events() -> list[UsageEvent]:
    """48 requests over one afternoon on three deployments, four keys in two teams,
    with errors, cache hits, streams and two requests that needed a second attempt."""
    events: list[UsageEvent] = []
    for i in range(1, 49):
        model, provider, deployment = DEPLOYMENTS[i % 3]
        failed = i % 8 == 0
        retried = i in RETRIED
        events.append(
            usage_event(
                i,
                ts=DAY + 12 * 3600 + i * 600,
                model=model,
                provider=provider,
                deployment=deployment,
                key_id=f"key-{i % 4}",
                tenant="team-a" if i % 4 < 2 else "team-b",
                user_id=f"user-{i % 5}",
                stream=i % 2 == 0,
                ttft_ms=40.0 + i if i % 2 == 0 else None,
                latency_ms=100.0 + 10 * i,
                prompt_tokens=100 + i,
                completion_tokens=20 + i,
                cost_usd=Decimal(i) / Decimal(10_000),
                status="error" if failed or retried else "ok",
                error_type=("rate_limit" if i % 16 == 0 else "upstream_error")
                if failed
                else ("timeout" if retried else None),
                http_status=(429 if i % 16 == 0 else 502) if failed else (504 if retried else 200),
                cache_hit=i % 6 == 1,
                final=not retried,
            )
        )
        if retried:
            events.append(
                usage_event(
                    i,
                    attempt=2,
                    ts=DAY + 12 * 3600 + i * 600 + 30,
                    model=model,
                    provider="openai",
                    deployment="openai-gpt-4o",
                    key_id=f"key-{i % 4}",
                    tenant="team-a" if i % 4 < 2 else "team-b",
                    latency_ms=250.0,
                    prompt_tokens=100 + i,
                    completion_tokens=30,
                    cost_usd=Decimal("0.0005"),
                )
            )
    return events


EVENTS = seeded_events()


def load(path: Path) -> dict[str, Any]:
    board: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return board


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those inside collapsed rows (rows themselves are skipped)."""
    for panel in board["panels"]:
        if panel.get("type") == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def variable_values(board: dict[str, Any]) -> dict[str, list[str]]:
    """Each custom variable's values, read from its query (``text : value, ...``)
    the way Grafana does."""
    values: dict[str, list[str]] = {}
    for variable in board["templating"]["list"]:
        assert variable["type"] == "custom", variable["name"]
        values[variable["name"]] = [
            item.split(" : ")[-1].strip() for item in variable["query"].split(",")
        ]
    return values


def panel_cases() -> list[Any]:
    cases = []
    for path in DASHBOARDS:
        board = load(path)
        for panel in panels(board):
            cases.append(pytest.param(path, panel["id"], id=f"{path.stem}:{panel['title']}"))
    return cases


def find_panel(board: dict[str, Any], title: str) -> dict[str, Any]:
    (panel,) = [p for p in panels(board) if p["title"] == title]
    return panel


def sql_of(panel: dict[str, Any]) -> str:
    (target,) = panel["targets"]
    sql: str = target["rawSql"]
    return sql


def provisioned_datasource() -> dict[str, Any]:
    config = yaml.safe_load((GRAFANA / "provisioning/datasources/clickhouse.yaml").read_text())
    (datasource,) = config["datasources"]
    assert isinstance(datasource, dict)
    return datasource


@pytest.fixture(scope="module")
async def store(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ClickHouseStore]:
    path = tmp_path_factory.mktemp("grafana") / "ch"
    opened = await ClickHouseStore.open(f"chdb://{path}", "igw")
    try:
        await opened.migrate()
        await opened.insert_usage(EVENTS, "grafana-seed")
        yield opened
    finally:
        await opened.close()


async def run(store: ClickHouseStore, sql: str, variables: dict[str, str]) -> list[list[Any]]:
    result = await store.query(expand(sql, WINDOW, variables), max_rows=1000, timeout_s=30)
    assert result.error is None, f"{result.error}\n{expand(sql, WINDOW, variables)}"
    return result.rows


def test_there_are_the_usage_and_latency_dashboards() -> None:
    titles = {load(path)["title"] for path in DASHBOARDS}
    assert {"IGW usage", "IGW latency"} <= titles


@pytest.mark.parametrize("path", DASHBOARDS, ids=[p.stem for p in DASHBOARDS])
def test_dashboard_model(path: Path) -> None:
    board = load(path)
    assert board["uid"]
    assert board["title"]
    assert board["panels"]
    datasource = {"type": PLUGIN, "uid": provisioned_datasource()["uid"]}
    ids = [panel["id"] for panel in panels(board)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels(board):
        assert panel["title"]
        assert panel["datasource"] == datasource, panel["title"]
        assert panel["targets"], panel["title"]
        series = panel["type"] == "timeseries"
        for target in panel["targets"]:
            assert target["datasource"] == datasource, panel["title"]
            assert target["editorType"] == "sql"
            assert target["rawSql"].strip()
            # The plugin's formats: 0 time series, 1 table; queryType matches.
            assert (target["format"], target["queryType"]) == (
                (0, "timeseries") if series else (1, "table")
            ), panel["title"]


def test_dashboard_uids_are_unique() -> None:
    uids = [load(path)["uid"] for path in DASHBOARDS]
    assert len(uids) == len(set(uids))


def test_provisioning_files() -> None:
    datasource = provisioned_datasource()
    assert datasource["type"] == PLUGIN
    assert datasource["jsonData"]["defaultDatabase"] == "igw"
    for field in ("host", "port", "protocol", "username"):
        assert datasource["jsonData"][field].startswith("$"), f"{field} comes from the environment"
    assert datasource["secureJsonData"]["password"].startswith("$")
    config = yaml.safe_load((GRAFANA / "provisioning/dashboards/igw.yaml").read_text())
    (provider,) = config["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"]


@pytest.mark.parametrize(("path", "panel_id"), panel_cases())
async def test_panel_sql_runs_on_the_embedded_engine(
    store: ClickHouseStore, path: Path, panel_id: int
) -> None:
    board = load(path)
    (panel,) = [p for p in panels(board) if p["id"] == panel_id]
    sql = sql_of(panel)
    values = variable_values(board)
    names = sorted(name for name in values if f"${name}" in sql or f"${{{name}}}" in sql)
    for combination in itertools.product(*(values[name] for name in names)):
        rows = await run(store, sql, dict(zip(names, combination, strict=True)))
        assert rows, f"{panel['title']} returned nothing for {combination}"


@pytest.mark.parametrize("rollup", ROLLUPS)
async def test_totals_equal_the_seeded_events(store: ClickHouseStore, rollup: str) -> None:
    board = load(GRAFANA / "dashboards" / "igw-usage.json")
    variables = {"rollup": rollup}

    async def stat(title: str) -> Any:
        rows = await run(store, sql_of(find_panel(board, title)), variables)
        assert len(rows) == 1
        assert len(rows[0]) == 1
        return rows[0][0]

    requests = sum(e.final for e in EVENTS)
    cache_hits = sum(e.cache_hit for e in EVENTS)
    errors = sum(e.final and e.status == "error" for e in EVENTS)
    assert requests == 48
    assert 0 < errors < requests
    assert 0 < cache_hits < requests
    assert await stat("Requests") == requests
    assert await stat("Tokens") == sum(e.prompt_tokens + e.completion_tokens for e in EVENTS)
    assert Decimal(str(await stat("Spend"))) == sum((e.cost_usd for e in EVENTS), Decimal(0))
    assert await stat("Cache hits") == cache_hits
    assert await stat("Cache misses") == requests - cache_hits
    assert await stat("Error rate") == pytest.approx(errors / requests)


async def test_top_keys_by_spend(store: ClickHouseStore) -> None:
    board = load(GRAFANA / "dashboards" / "igw-usage.json")
    rows = await run(
        store, sql_of(find_panel(board, "Top keys by spend")), {"rollup": "usage_hour"}
    )
    spend: dict[str, Decimal] = {}
    for event in EVENTS:
        assert event.key_id is not None
        spend[event.key_id] = spend.get(event.key_id, Decimal(0)) + event.cost_usd
    ranked = sorted(spend.items(), key=lambda item: (-item[1], item[0]))
    assert [(row[0], Decimal(str(row[4]))) for row in rows] == ranked


async def test_latency_quantiles_per_deployment(store: ClickHouseStore) -> None:
    board = load(GRAFANA / "dashboards" / "igw-latency.json")
    rows = await run(
        store, sql_of(find_panel(board, "Latency by deployment")), {"rollup": "usage_day"}
    )
    by_deployment = {row[0]: row for row in rows}
    assert set(by_deployment) == {deployment for _, _, deployment in DEPLOYMENTS}
    for deployment, row in by_deployment.items():
        latencies = sorted(e.latency_ms for e in EVENTS if e.deployment == deployment)
        p50, p95, p99 = row[5:8]
        assert latencies[0] <= p50 <= p95 <= p99 <= latencies[-1]
