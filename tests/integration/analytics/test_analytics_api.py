"""The analytics API through real NATS and the embedded ClickHouse engine: a
seeded workload shows the same totals in every endpoint as in ``igw sql``."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.stack import Stack
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

MASTER = "sk-master-analytics-0123456789"
USER: list[Any] = [{"role": "user", "content": "hello analytics"}]


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, dict[str, str]]]:
    root: Path = tmp_path_factory.mktemp("igw-analytics")
    stack = Stack(root)
    stack.overrides = {"auth": {"master_key": MASTER}}
    try:
        stack.start_all()
        keys = {name: new_key(stack, key_alias=name) for name in ("app-a", "app-b")}
        keys["viewer"] = new_key(stack, role="viewer")
        seed(stack, keys)
        yield stack, keys
    finally:
        stack.stop_all()


def new_key(stack: Stack, **fields: Any) -> str:
    return stack.new_key(MASTER, **fields)


def seed(stack: Stack, keys: dict[str, str]) -> None:
    def client(name: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key=keys[name], max_retries=0)

    a, b = client("app-a"), client("app-b")
    for _ in range(5):
        a.chat.completions.create(model="sim", messages=USER)
    for _ in range(2):
        a.chat.completions.create(model="sim-echo", messages=USER)
    for _ in range(3):
        b.chat.completions.create(model="sim", messages=USER)
    for _ in range(2):
        with pytest.raises(openai.APIStatusError):
            b.chat.completions.create(model="sim-500", messages=USER)
    cached = 0
    while True:  # misses until the first answer is stored (in the background), then a hit
        reply = b.chat.completions.with_raw_response.create(
            model="sim", messages=USER, extra_body={"x-gateway": {"cache": True}}
        )
        cached += 1
        if reply.headers["x-cache"] == "HIT":
            break
        assert cached < 50, "the answer never came from the cache"
    keys["cached-requests"] = str(cached)
    # each sim-500 request has two rows: the failed attempt, handed back for
    # another try, and the router's final refusal when nothing was left
    wait_until(lambda: rows(stack) == 12 + 2 + cached, 30, "the seeded usage to land")


def rows(stack: Stack) -> int:
    try:
        return int(stack.sql("SELECT count() FROM requests")[0][0])
    except AssertionError:  # the accounting service is still starting
        return -1


def api(stack: Stack, path: str, key: str = MASTER, **params: Any) -> httpx.Response:
    return httpx.get(
        f"{stack.base_url}{path}",
        headers={"authorization": f"Bearer {key}"},
        params=params,
        timeout=30,
    )


def money(value: Any) -> Decimal:
    return Decimal(str(value))


def test_totals_match_sql(seeded: tuple[Stack, dict[str, str]]) -> None:
    stack, keys = seeded
    usage = api(stack, "/api/v1/usage", key=keys["viewer"])
    assert usage.status_code == 200, usage.text
    got = usage.json()
    ((requests, tokens, cost, hits, errors),) = stack.sql(
        "SELECT countIf(final), sum(prompt_tokens) + sum(completion_tokens), sum(cost_usd), "
        "countIf(cache_hit), countIf(final AND status = 'error') FROM requests"
    )
    cached = int(keys["cached-requests"])
    assert got["total_requests"] == requests == 12 + cached
    assert got["total_tokens"] == tokens
    assert money(got["total_cost"]) == money(float(Decimal(cost)))
    assert got["cache_hits"] == hits == 1 and got["cache_misses"] == 11 + cached
    assert got["errors"] == errors == 2


@pytest.mark.parametrize("bucket", ["minute", "hour", "day"])
def test_time_series_add_up_to_the_totals(
    seeded: tuple[Stack, dict[str, str]], bucket: str
) -> None:
    stack, _ = seeded
    totals = api(stack, "/api/v1/usage").json()
    reply = api(stack, "/analytics/spend", group_by="model", bucket=bucket)
    assert reply.status_code == 200, reply.text
    series = reply.json()["series"]
    assert {s["group"] for s in series} == {"sim", "sim-echo", "sim-500"}
    points = [p for s in series for p in s["points"]]
    assert sum(p["requests"] for p in points) == totals["total_requests"]
    assert sum(p["tokens"] for p in points) == totals["total_tokens"]
    cost = sum(money(p["cost_usd"]) for p in points)
    assert abs(cost - money(totals["total_cost"])) < Decimal("1e-12")


def test_usage_by_key_names_each_key(seeded: tuple[Stack, dict[str, str]]) -> None:
    stack, keys = seeded
    reply = api(stack, "/analytics/usage-by-key")
    assert reply.status_code == 200, reply.text
    by_alias = {row["key_alias"]: row for row in reply.json()["data"]}
    assert by_alias["app-a"]["requests"] == 7
    cached = int(keys["cached-requests"])
    assert by_alias["app-b"]["requests"] == 5 + cached and by_alias["app-b"]["errors"] == 2
    ((cost_a,),) = stack.sql(
        "SELECT sum(cost_usd) FROM requests WHERE key_id = "
        f"'{api(stack, '/key/info', key=keys['app-a']).json()['key']}'"
    )
    assert money(by_alias["app-a"]["cost_usd"]) == money(float(Decimal(cost_a)))
    assert keys["app-a"] not in reply.text


def test_latency_and_errors(seeded: tuple[Stack, dict[str, str]]) -> None:
    stack, _ = seeded
    latency = {row["deployment"]: row for row in api(stack, "/analytics/latency").json()["data"]}
    assert latency["sim"]["requests"] >= 9 and latency["sim"]["p50_ms"] > 0
    assert latency["sim"]["p95_ms"] >= latency["sim"]["p50_ms"]
    assert "cache" not in latency
    errors = {
        row["group"]: row
        for row in api(stack, "/analytics/errors", group_by="model").json()["data"]
    }
    assert errors["sim-500"]["error_rate"] == 1.0 and errors["sim"]["error_rate"] == 0.0
    assert sum(errors["sim-500"]["by_type"].values()) == 2


def test_who_may_ask_and_what_is_refused(seeded: tuple[Stack, dict[str, str]]) -> None:
    stack, keys = seeded
    assert api(stack, "/api/v1/usage", key=keys["app-a"]).status_code == 403
    assert api(stack, "/api/v1/usage", key="sk-igw-nope").status_code == 401
    bad = api(stack, "/analytics/spend", bucket="week")
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "bucket"
    backwards = api(
        stack, "/api/v1/usage", start="2026-01-02T00:00:00Z", end="2026-01-01T00:00:00Z"
    )
    assert backwards.status_code == 400
    too_fine = api(stack, "/analytics/spend", bucket="minute", start="2020-01-01T00:00:00Z")
    assert too_fine.status_code == 400 and "coarser" in too_fine.json()["error"]["message"]
    empty = api(stack, "/api/v1/usage", start="2001-01-01T00:00:00Z", end="2001-01-02T00:00:00Z")
    assert empty.status_code == 200 and empty.json()["total_requests"] == 0
