"""Budgets and rate limits through real NATS, with two ingress processes sharing
one gateway: limits hold fleet-wide, spend settles exactly, slots come back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.stack import SERVICES, Stack, sim_model
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

MASTER = "sk-master-limits-0123456789"
USER: list[Any] = [{"role": "user", "content": "hello"}]
PRICE = {"input_per_mtok": "1000", "output_per_mtok": "2000"}  # $0.001 / $0.002 a token


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root: Path = tmp_path_factory.mktemp("igw-limits")
    stack = Stack(root, services=(*SERVICES, "ingress-2"))
    stack.overrides = {"auth": {"master_key": MASTER}}
    p = stack.sim_port
    stack.extra_models = [
        sim_model("priced", "sim", p, price=PRICE),
        sim_model("priced-slow", "sim?itl_ms=50&tokens=400", p, price=PRICE),
    ]
    try:
        stack.start_all()
        yield stack
    finally:
        stack.stop_all()


def admin(url: str, method: str, path: str, key: str = MASTER, **kw: Any) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"}
    return httpx.request(method, f"{url}{path}", headers=headers, timeout=10, **kw)


def new_key(stack: Stack, **fields: Any) -> str:
    return stack.new_key(MASTER, **fields)


def info(stack: Stack, key: str) -> dict[str, Any]:
    reply = admin(stack.base_url, "GET", "/key/info", key=key)
    assert reply.status_code == 200, reply.text
    return reply.json()["info"]  # type: ignore[no-any-return]


def cost(usage: dict[str, int]) -> Decimal:
    return (Decimal(usage["prompt_tokens"]) * 1000 + Decimal(usage["completion_tokens"]) * 2000) / (
        10**6
    )


async def chat(client: httpx.AsyncClient, url: str, key: str, **body: Any) -> httpx.Response:
    return await client.post(
        f"{url}/v1/chat/completions",
        headers={"authorization": f"Bearer {key}"},
        json={"model": "priced", "messages": USER, "max_tokens": 16, **body},
    )


def flood(stack: Stack, key: str, total: int) -> list[httpx.Response]:
    """``total`` requests, 16 at a time, alternating between the two replicas."""

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as client:
            urls = [stack.base_url, stack.replica_url("ingress-2")]
            out: list[httpx.Response] = []
            for start in range(0, total, 16):
                out += await asyncio.gather(
                    *(chat(client, urls[i % 2], key) for i in range(start, min(total, start + 16)))
                )
            return out

    return asyncio.run(run())


def test_a_burst_never_spends_past_the_budget(fleet: Stack) -> None:
    team = admin(fleet.base_url, "POST", "/team/new", json={"team_id": "burst"})
    assert team.status_code == 200, team.text
    user = admin(fleet.base_url, "POST", "/user/new", json={"team_id": "burst"}).json()
    # the worst case of one request: 6 estimated prompt tokens (x1.5) and 16 output tokens
    worst = (Decimal(6) * Decimal("1.5") * 1000 + 16 * 2000) / 10**6
    budget = worst * 10
    key = new_key(fleet, max_budget=float(budget), user_id=user["user_id"])

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as client:
            urls = [fleet.base_url, fleet.replica_url("ingress-2")]
            return await asyncio.gather(*(chat(client, urls[i % 2], key) for i in range(50)))

    replies = asyncio.run(burst())
    admitted = [r for r in replies if r.status_code == 200]
    refused = [r for r in replies if r.status_code != 200]
    assert 1 <= len(admitted) <= 10
    assert refused and all(r.status_code == 402 for r in refused), refused[0].text
    assert refused[0].json()["error"]["code"] == "budget_exceeded"
    spent = sum(cost(r.json()["usage"]) for r in admitted)
    assert spent <= budget

    def settled() -> bool:
        now = info(fleet, key)
        return now["spend_held"] == 0 and Decimal(str(now["spend"])) == spent

    wait_until(settled, 30, "the burst's spend to settle")
    user_info = admin(fleet.base_url, "GET", "/user/info", params={"user_id": user["user_id"]})
    team_info = admin(fleet.base_url, "GET", "/team/info", params={"team_id": "burst"})
    assert Decimal(str(user_info.json()["user_info"]["spend"])) == spent
    assert Decimal(str(team_info.json()["team_info"]["spend"])) == spent


def test_two_replicas_share_one_rpm_limit(fleet: Stack) -> None:
    if time.time() % 60 > 40:  # keep the whole test inside one rate-limit minute
        time.sleep(61 - time.time() % 60)
    key = new_key(fleet, rpm_limit=60)

    replies = flood(fleet, key, 80)
    admitted = [r for r in replies if r.status_code == 200]
    limited = [r for r in replies if r.status_code == 429]
    assert len(admitted) == 60 and len(limited) == 20
    assert admitted[0].headers["x-ratelimit-limit-requests"] == "60"
    refusal = limited[0]
    assert refusal.json()["error"]["type"] == "rate_limit_error"
    assert int(refusal.headers["retry-after"]) >= 1
    assert refusal.headers["x-ratelimit-remaining-requests"] == "0"


def test_leased_capacity_stays_fleet_wide_and_settles_exactly(fleet: Stack) -> None:
    """A key with room to spare is admitted from leases; its limits still hold
    across both replicas, and once the leases go idle and the requests settle,
    nothing is held and the spend is exact."""
    if time.time() % 60 > 30:  # keep the flood inside one rate-limit minute
        time.sleep(61 - time.time() % 60)
    key = new_key(fleet, rpm_limit=300, max_budget=20.0, max_parallel_requests=64)

    replies = flood(fleet, key, 400)
    admitted = [r for r in replies if r.status_code == 200]
    limited = [r for r in replies if r.status_code == 429]
    assert len(admitted) == 300 and len(limited) == 100, {r.status_code for r in replies}
    spent = sum(cost(r.json()["usage"]) for r in admitted)

    def settled() -> bool:
        now = info(fleet, key)
        return now["spend_held"] == 0 and Decimal(str(now["spend"])) == spent

    wait_until(settled, 30, "the leased requests to settle and the leases to go idle")
    query = (
        "SELECT count(), sum(cost_usd) FROM requests WHERE final AND key_id = "
        f"'{info_token(fleet, key)}'"
    )
    wait_until(lambda: int(fleet.sql(query)[0][0]) >= 300, 30, "the usage rows")
    rows = fleet.sql(query)
    assert int(rows[0][0]) == 300 and Decimal(str(rows[0][1])) == spent


def info_token(stack: Stack, key: str) -> str:
    reply = admin(stack.base_url, "GET", "/key/info", key=key)
    return str(reply.json()["key"])


def test_a_token_limit_refuses_once_the_minute_is_spent(fleet: Stack) -> None:
    key = new_key(fleet, tpm_limit=100)

    async def until_limited() -> tuple[int, httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as client:
            for n in range(20):
                reply = await chat(client, fleet.base_url, key)
                if reply.status_code != 200:
                    return n, reply
        raise AssertionError("the token limit never refused")

    admitted, refusal = asyncio.run(until_limited())
    assert 1 <= admitted <= 6  # each request is about 22 tokens
    assert refusal.status_code == 429
    assert "tokens-per-minute" in refusal.json()["error"]["message"]


def test_an_aborted_stream_gives_its_parallel_slot_back(fleet: Stack) -> None:
    key = new_key(fleet, max_parallel_requests=1)
    headers = {"authorization": f"Bearer {key}"}
    body = {"model": "priced-slow", "messages": USER, "stream": True}
    with (
        httpx.Client(timeout=30) as client,
        client.stream(
            "POST", f"{fleet.base_url}/v1/chat/completions", headers=headers, json=body
        ) as stream,
    ):
        assert stream.status_code == 200
        next(stream.iter_lines())  # the stream is running
        second = client.post(
            f"{fleet.replica_url('ingress-2')}/v1/chat/completions",
            headers=headers,
            json={"model": "priced", "messages": USER},
        )
        assert second.status_code == 429
        assert second.json()["error"]["code"] == "parallel_request_limit_reached"
    # the client went away mid-stream: the slot is free again

    def admitted() -> bool:
        reply = httpx.post(
            f"{fleet.base_url}/v1/chat/completions",
            headers=headers,
            json={"model": "priced", "messages": USER},
            timeout=30,
        )
        return reply.status_code == 200

    wait_until(admitted, 10, "the aborted stream's slot to be released")


def test_a_budget_period_resets(fleet: Stack) -> None:
    worst = (Decimal(6) * Decimal("1.5") * 1000 + 16 * 2000) / 10**6
    key = new_key(fleet, max_budget=float(worst * Decimal("1.5")), budget_duration="3s")

    async def one() -> httpx.Response:
        async with httpx.AsyncClient(timeout=30) as client:
            return await chat(client, fleet.base_url, key)

    assert asyncio.run(one()).status_code == 200
    wait_until(lambda: info(fleet, key)["spend"] > 0, 30, "the first request to settle")
    assert asyncio.run(one()).status_code == 402
    assert info(fleet, key)["budget_reset_at"] is not None
    wait_until(lambda: asyncio.run(one()).status_code == 200, 10, "the budget to reset")


def test_a_key_revoked_on_one_replica_stops_on_the_other_within_a_second(fleet: Stack) -> None:
    key = new_key(fleet)
    other = fleet.replica_url("ingress-2")
    headers = {"authorization": f"Bearer {key}"}
    body = {"model": "priced", "messages": USER}
    assert httpx.post(f"{other}/v1/chat/completions", headers=headers, json=body).is_success
    revoked = admin(fleet.base_url, "POST", "/key/update", json={"key": key, "blocked": True})
    assert revoked.status_code == 200
    started = time.monotonic()

    def refused() -> bool:
        reply = httpx.get(f"{other}/v1/models", headers=headers, timeout=5)
        return reply.status_code == 401

    wait_until(refused, 1.0, "the other replica to refuse the revoked key")
    assert time.monotonic() - started < 1.0
