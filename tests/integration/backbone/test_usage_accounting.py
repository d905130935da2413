"""Every attempt through the gateway lands in ClickHouse exactly once, even
when the accounting process is killed and restarted while usage flows."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import openai
import pytest

from tests.stack import Stack

pytestmark = pytest.mark.integration


def count_rows(stack: Stack, model: str) -> tuple[int, int, Decimal]:
    rows = stack.sql(
        "SELECT count(), uniqExact(request_id, attempt), toString(sum(cost_usd)) "
        f"FROM requests WHERE model = '{model}'"
    )
    count, unique, cost = rows[0]
    return int(count), int(unique), Decimal(cost)


def wait_for_rows(stack: Stack, model: str, expected: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    seen = (0, 0, Decimal(0))
    while time.monotonic() < deadline:
        try:
            seen = count_rows(stack, model)
        except AssertionError as exc:  # the restarted accounting service is not answering yet
            if "not running" not in str(exc):
                raise
            continue
        if seen[0] >= expected:
            return
        time.sleep(0.2)
    raise AssertionError(f"only {seen} rows of {expected} arrived")


def test_usage_rows_land_once_across_an_accounting_crash(stack: Stack) -> None:
    client = openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key="x", max_retries=0)
    model = "sim-acct"

    def call(i: int) -> int:
        reply = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": f"request {i}"}]
        )
        assert reply.usage is not None
        return reply.usage.completion_tokens

    with ThreadPoolExecutor(8) as pool:
        first = list(pool.map(call, range(60)))
        stack.kill("accounting")  # SIGKILL while usage of the first wave is in flight
        second = list(pool.map(call, range(60, 120)))
    stack.start("accounting")
    wait_for_rows(stack, model, 120)
    count, unique, cost = count_rows(stack, model)
    assert count == unique == 120
    tokens = sum(first) + sum(second)
    rows = stack.sql(f"SELECT sum(completion_tokens) FROM requests WHERE model = '{model}'")
    assert int(rows[0][0]) == tokens
    # 16 output tokens at 0.60 $/Mtok plus the prompt at 0.15 $/Mtok, per request
    assert cost > Decimal("120") * Decimal("16") * Decimal("0.60") / 1_000_000
