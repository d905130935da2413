"""Exactly once under crashes: while requests flow, the accounting process is
SIGKILLed mid-batch three times and its ClickHouse access is stopped and
restarted once. Every request still succeeds, and the table, the rollups and
the analytics API all hold each attempt once, to the exact decimal cost."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.stack import Stack
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

MODEL = "sim-acct"
REQUESTS = 300
PRICE_IN, PRICE_OUT = Decimal("0.15"), Decimal("0.60")  # tests.stack.PRICE, $ per Mtok


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root: Path = tmp_path_factory.mktemp("igw-exactly-once")
    deployment = Stack(root)
    try:
        deployment.start_all()
        yield deployment
    finally:
        deployment.stop_all()


def sql_or_none(stack: Stack, query: str) -> list[list[Any]] | None:
    try:
        return stack.sql(query)
    except AssertionError:  # the accounting service is restarting
        return None


def stored(stack: Stack) -> int:
    rows = sql_or_none(stack, f"SELECT count() FROM requests WHERE model = '{MODEL}'")
    return -1 if rows is None else int(rows[0][0])


def test_crashes_and_a_store_outage_lose_and_double_nothing(stack: Stack) -> None:
    client = openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key="x", max_retries=0)
    expected = Decimal(0)
    done = 0
    lock = threading.Lock()

    def call(i: int) -> None:
        nonlocal expected, done
        reply = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": f"request number {i}"}]
        )
        assert reply.usage is not None
        cost = (
            reply.usage.prompt_tokens * PRICE_IN + reply.usage.completion_tokens * PRICE_OUT
        ) / 10**6
        with lock:
            expected += cost
            done += 1

    def progressed(target: int) -> bool:
        with lock:
            return done >= target

    with ThreadPoolExecutor(6) as pool:
        sent = 0
        for n in range(3):  # three crashes, each while usage of a wave is being batched
            wave = [pool.submit(call, i) for i in range(sent, sent + 80)]
            sent += 80
            wait_until(lambda n=n: progressed(n * 80 + 30), 60, "answers of this wave")
            stack.kill("accounting", signal.SIGKILL)
            stack.start("accounting")
            for future in wave:
                future.result()
            wait_until(lambda: stored(stack) >= 0, 60, "accounting to answer again")
        # the store goes away for a while: usage waits in JetStream, answers go on
        stack.kill("accounting", signal.SIGTERM)
        outage = [pool.submit(call, i) for i in range(sent, REQUESTS)]
        for future in outage:
            future.result()  # every request succeeds while nothing can store usage
        stack.start("accounting")

    wait_until(lambda: stored(stack) == REQUESTS, 90, "every attempt to land")
    ((count, unique, cost, rolled),) = stack.sql(
        "SELECT count(), uniqExact(request_id, attempt), toString(sum(cost_usd)), "
        f"(SELECT sum(attempts) FROM usage_minute WHERE model = '{MODEL}') "
        f"FROM requests WHERE model = '{MODEL}'"
    )
    assert int(count) == int(unique) == int(rolled) == REQUESTS
    assert Decimal(cost) == expected
    ((hourly_cost,),) = stack.sql(
        f"SELECT toString(sum(cost_usd)) FROM usage_hour WHERE model = '{MODEL}'"
    )
    assert Decimal(hourly_cost) == expected
    errors = httpx.get(
        f"{stack.base_url}/analytics/errors", params={"group_by": "model"}, timeout=30
    )
    by_model = {row["group"]: row for row in errors.json()["data"]}
    assert by_model[MODEL]["requests"] == REQUESTS and by_model[MODEL]["errors"] == 0
