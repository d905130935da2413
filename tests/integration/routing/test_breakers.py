"""Circuit breakers through real NATS, with two router replicas that must agree."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import nats
import openai
import pytest

from schemas import subjects as s
from schemas.bus import BreakerRecord
from tests.stack import Stack, sim_model

pytestmark = pytest.mark.integration

USER: list[Any] = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def two_routers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root: Path = tmp_path_factory.mktemp("igw-breakers")
    stack = Stack(
        root,
        services=("simulator", "router", "router-2", "worker-openai", "accounting", "ingress"),
    )
    # fails its first 4 calls, then recovers
    stack.extra_models = [sim_model("flaky", "sim?fault=500&fault_times=4", stack.sim_port)]
    stack.overrides = {
        "routing": {"breaker_min_calls": 4, "breaker_error_rate": 0.5, "breaker_cooldown_s": 1.5}
    }
    try:
        stack.start_all()
        yield stack
    finally:
        stack.stop_all()


def status(stack: Stack, deployment: str) -> dict[str, Any]:
    rows = httpx.get(f"{stack.base_url}/api/v1/providers/status", timeout=5).json()["data"]
    return next(r for r in rows if r["deployment"] == deployment)  # type: ignore[no-any-return]


def wait_for_state(stack: Stack, deployment: str, state: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    seen: dict[str, Any] = {}
    while time.monotonic() < deadline:
        seen = status(stack, deployment)
        if seen["state"] == state:
            return
        time.sleep(0.05)
    raise AssertionError(f"{deployment} never became {state}: {seen}")


def shared_record(stack: Stack, deployment: str) -> BreakerRecord:
    async def read() -> BreakerRecord:
        nc = await nats.connect(stack.nats_url)
        try:
            kv = await nc.jetstream().key_value(s.KV_HEALTH)
            entry = await kv.get(deployment)
            return BreakerRecord.model_validate_json(entry.value or b"")
        finally:
            await nc.close()

    return asyncio.run(read())


def test_errors_open_the_breaker_for_every_router_and_a_probe_closes_it(
    two_routers: Stack,
) -> None:
    stack = two_routers
    client = openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key="x", max_retries=0)
    for _ in range(4):
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="flaky", messages=USER)
    wait_for_state(stack, "flaky", "open")
    assert shared_record(stack, "flaky").state == "open"
    row = status(stack, "flaky")
    assert row["error_rate"] == 1.0 and row["recent_calls"] == 4

    calls = stack.sim_stats()["requests"]
    for _ in range(8):  # the two routers share the requests; both refuse fast
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(model="flaky", messages=USER)
        assert caught.value.status_code == 503
        assert "circuit breaker" in caught.value.message
    assert stack.sim_stats()["requests"] == calls

    wait_for_state(stack, "flaky", "half_open")
    reply = client.chat.completions.create(model="flaky", messages=USER)  # the one probe
    assert reply.choices[0].finish_reason == "stop"
    wait_for_state(stack, "flaky", "closed")
    assert shared_record(stack, "flaky").state == "closed"
    for _ in range(4):
        client.chat.completions.create(model="flaky", messages=USER)
    assert status(stack, "flaky")["p50_ms"] is not None
