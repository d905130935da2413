"""Prometheus metrics through real NATS and every service: requests sent with the
official SDK (ok, streamed, cached, rate-limited, over budget, failing, queued)
show up in each service's ``/metrics`` with the counts and tokens the client and
the usage store saw."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.stack import SERVICES, Stack, sim_model
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

MASTER = "sk-master-metrics-0123456789"
HELLO: list[Any] = [{"role": "user", "content": "Say hello"}]
Samples = list[tuple[str, dict[str, str], float]]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root: Path = tmp_path_factory.mktemp("igw-metrics")
    stack = Stack(root, services=(*SERVICES, "batcher"))
    p = stack.sim_port
    stack.extra_models = [
        sim_model("metered", "sim", p),
        sim_model("metered-rl", "sim", p),
        sim_model("metered-queue", "sim", p, rpm_limit=12),  # one request per 5 s
    ]
    stack.overrides = {
        "auth": {"master_key": MASTER},
        "limits": {"models": {"metered-rl": {"rpm": 1}}},
    }
    try:
        stack.start_all()
        yield stack
    finally:
        stack.stop_all()


def scrape(stack: Stack, name: str) -> Samples:
    reply = httpx.get(stack.metrics_url(name), timeout=10)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("text/plain")
    return [
        (s.name, dict(s.labels), s.value)
        for family in text_string_to_metric_families(reply.text)
        for s in family.samples
    ]


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    return sum(
        v for n, ls, v in samples if n == name and all(ls.get(k) == w for k, w in labels.items())
    )


def names(samples: Samples) -> set[str]:
    return {n for n, _, _ in samples}


def client_for(stack: Stack, key: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{stack.base_url}/v1",
        api_key=key,
        max_retries=0,
        timeout=30,
        _strict_response_validation=True,
    )


def test_every_service_serves_metrics_and_health(fleet: Stack) -> None:
    for name in ("router", "worker-openai", "accounting", "batcher"):
        health = httpx.get(fleet.metrics_url(name).replace("/metrics", "/health"), timeout=5)
        assert health.status_code == 200
        assert health.json() == {"status": "ok", "service": name}
        assert "process_cpu_seconds_total" in names(scrape(fleet, name))
    batcher = scrape(fleet, "batcher")
    assert total(batcher, "llm_gateway_batches_total") == 0
    # a series belongs to one service only: nothing is counted twice across the fleet
    ingress = scrape(fleet, "ingress")
    assert "llm_gateway_in_flight_requests" in names(ingress)
    assert "llm_gateway_in_flight_requests" not in names(scrape(fleet, "router"))


def test_requests_tokens_and_cost_as_the_client_and_the_store_saw_them(fleet: Stack) -> None:
    key = fleet.new_key(MASTER)
    broke = fleet.new_key(MASTER, max_budget=0.000000001)
    client = client_for(fleet, key)
    output_tokens = 0
    ok_by_provider = 0

    for _ in range(2):
        reply = client.chat.completions.create(model="metered", messages=HELLO)
        assert reply.usage is not None
        output_tokens += reply.usage.completion_tokens
        ok_by_provider += 1
    chunks = list(
        client.chat.completions.create(
            model="metered", messages=HELLO, stream=True, stream_options={"include_usage": True}
        )
    )
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens >= 2
    ok_by_provider += 1

    # the cache: a miss answered upstream, then (once stored) a hit
    cached = {"x-gateway": {"cache": True}}
    hits: list[str] = []

    def hit() -> bool:
        raw = client.chat.completions.with_raw_response.create(
            model="metered", messages=[{"role": "user", "content": "cache me"}], extra_body=cached
        )
        hits.append(raw.headers["x-cache"])
        return hits[-1] == "HIT"

    wait_until(hit, 10, "a cache hit")
    misses = hits.count("MISS")
    assert misses >= 1 and hits.count("HIT") == 1
    ok_by_provider += misses

    # a model limited to 1 request a minute: refused once (a minute may roll over first)
    rl_ok, refusal = 0, None
    for _ in range(3):
        try:
            client.chat.completions.create(model="metered-rl", messages=HELLO)
            rl_ok += 1
        except openai.RateLimitError as exc:
            refusal = exc.code
            break
    assert refusal == "rate_limit_exceeded", "the rpm limit never refused"
    ok_by_provider += rl_ok

    with pytest.raises(openai.APIStatusError) as over_budget:
        client_for(fleet, broke).chat.completions.create(model="metered", messages=HELLO)
    assert over_budget.value.status_code == 402

    with pytest.raises(openai.APIStatusError) as failing:
        client.chat.completions.create(model="sim-500", messages=HELLO)
    failed_status = failing.value.status_code
    assert failed_status >= 500

    # a deployment at its rate limit: the second request waits in IGW_REQUESTS
    client.chat.completions.create(model="metered-queue", messages=HELLO)
    waiting: list[openai.types.chat.ChatCompletion] = []
    second = threading.Thread(
        target=lambda: waiting.append(
            client.chat.completions.create(model="metered-queue", messages=HELLO)
        )
    )
    second.start()

    def queued() -> bool:
        router = scrape(fleet, "router")
        return total(router, "llm_gateway_queue_depth", priority="interactive") == 1

    wait_until(queued, 10, "a queued request in the router's metrics")
    router = scrape(fleet, "router")
    assert total(router, "llm_gateway_queue_age_seconds", priority="interactive") > 0
    assert total(router, "llm_gateway_queue_depth", priority="batch") == 0
    assert total(scrape(fleet, "ingress"), "llm_gateway_in_flight_requests") == 1
    second.join(timeout=30)
    assert len(waiting) == 1
    ok_by_provider += 2

    # -- ingress: one count per request, by outcome -------------------------------------
    ingress = scrape(fleet, "ingress")
    requests = "llm_gateway_requests_total"
    ok_metered = total(ingress, requests, model="metered", code="200", provider="openai")
    assert ok_metered == 3 + misses
    assert total(ingress, requests, model="metered", provider="cache", status="ok") == 1
    assert total(ingress, "llm_gateway_cache_hits_total", model="metered") == 1
    assert total(ingress, requests, model="metered", code="402", status="client_error") == 1
    assert total(ingress, "llm_gateway_budget_exceeded_total") == 1
    assert total(ingress, requests, model="metered-rl", code="200") == rl_ok
    assert total(ingress, requests, model="metered-rl", code="429", provider="none") == 1
    assert total(ingress, "llm_rate_limit_exceeded_total", code="rate_limit_exceeded") == 1
    assert total(ingress, requests, model="sim-500", status="error") == 1
    assert total(ingress, requests, model="sim-500", code=str(failed_status)) == 1
    assert total(ingress, requests, model="metered-queue", status="ok") == 2
    openai_answers = total(ingress, "llm_gateway_provider_requests_total", provider="openai")
    assert openai_answers == ok_by_provider + 1  # the failing request tried openai too
    ttft = "gen_ai_server_time_to_first_token_seconds_count"
    assert total(ingress, ttft, gen_ai_request_model="metered", gen_ai_provider_name="openai") == 1
    tpot = "gen_ai_server_time_per_output_token_seconds_count"
    assert total(ingress, tpot, gen_ai_request_model="metered") == 1
    assert total(ingress, "llm_gateway_in_flight_requests") == 0

    # -- wait until the bus is drained: every attempt acked, every usage event stored ---
    def drained() -> bool:
        router = scrape(fleet, "router")
        return all(
            total(router, series, consumer=consumer) == 0
            for consumer in ("worker-openai", "accounting", "router")
            for series in ("llm_gateway_consumer_pending", "llm_gateway_consumer_ack_pending")
        ) and {"worker-openai", "accounting", "router"} <= {
            ls.get("consumer", "") for n, ls, _ in router if n == "llm_gateway_consumer_pending"
        }

    wait_until(drained, 30, "the consumers to drain")
    router = scrape(fleet, "router")
    assert total(router, "llm_gateway_consumer_max_ack_pending", consumer="router") == 1024
    assert total(router, "llm_gateway_breaker_state", deployment="metered") == 0
    assert total(router, "llm_gateway_queue_depth", priority="interactive") == 0

    # -- worker and accounting against the usage store ----------------------------------
    rows = {
        (str(provider), str(status)): (int(n), int(prompt), int(completion), float(cost))
        for provider, status, n, prompt, completion, cost in fleet.sql(
            "SELECT provider, status, count(), sum(prompt_tokens), sum(completion_tokens), "
            "toFloat64(sum(cost_usd)) FROM requests GROUP BY provider, status"
        )
    }

    def stored(**where: str) -> tuple[int, int, int, float]:
        picked = [
            v
            for (p, s), v in rows.items()
            if where.get("provider", p) == p and where.get("status", s) == s
        ]
        return (
            sum(v[0] for v in picked),
            sum(v[1] for v in picked),
            sum(v[2] for v in picked),
            sum(v[3] for v in picked),
        )

    worker = scrape(fleet, "worker-openai")
    attempts = "llm_provider_requests_total"
    assert total(worker, attempts, provider="openai", status="ok") == ok_by_provider
    assert (
        total(worker, attempts, provider="openai", status="ok")
        == stored(provider="openai", status="ok")[0]
    )
    errors = stored(provider="openai", status="error")[0]
    assert errors >= 1
    assert total(worker, attempts, provider="openai", status="error") == errors
    assert total(worker, "llm_provider_errors_total", provider="openai") == errors
    assert total(worker, "llm_provider_latency_seconds_count", provider="openai") == (
        ok_by_provider + errors
    )
    duration = "gen_ai_client_operation_duration_seconds_count"
    assert total(worker, duration, gen_ai_operation_name="chat") == ok_by_provider + errors
    usage_sum = "gen_ai_client_token_usage_sum"
    _, openai_prompt, openai_completion, _ = stored(provider="openai")
    assert total(worker, usage_sum, gen_ai_token_type="output") == openai_completion
    assert total(worker, usage_sum, gen_ai_token_type="input") == openai_prompt
    assert openai_completion >= output_tokens + usage.completion_tokens

    accounting = scrape(fleet, "accounting")
    _, prompt, completion, cost = stored()
    assert total(accounting, "llm_gateway_tokens_total", type="output") == completion
    assert total(accounting, "llm_gateway_tokens_total", type="input") == prompt
    assert total(accounting, "llm_gateway_cost_total") == pytest.approx(cost)
    assert cost > 0
    assert total(accounting, "llm_gateway_model_cost_total") == pytest.approx(cost)
    assert total(accounting, "llm_gateway_cost_total", provider="cache") == 0
    assert total(accounting, "llm_gateway_tokens_total", provider="cache", model="metered") == 0
