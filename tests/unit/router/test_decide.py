from __future__ import annotations

import random
from collections import Counter
from decimal import Decimal
from typing import Any

import pytest

from schemas.bus import ErrorInfo, Needs, RoutingView, UsageEvent
from services.router.decide import NoRoute, RoutingTable, backoff_s, decide
from services.router.health import HealthBook, Outcome
from services.runtime.errors import ModelNotFound
from services.runtime.settings import (
    AliasRouting,
    AutoRouting,
    ModelDeployment,
    Price,
    RoutingSettings,
)

ERROR = ErrorInfo(status=502, type="upstream_error", message="boom", retryable=True)


def request(model: str, attempt: int = 1, **extra: Any) -> RoutingView:
    return RoutingView(
        request_id="req_1",
        model=model,
        attempt=attempt,
        reply_subject="igw.chunks.x.req_1",
        **extra,
    )


def dep(alias: str, name: str, price: int = 1, weight: float = 1.0) -> ModelDeployment:
    return ModelDeployment(
        alias=alias,
        provider="openai",
        deployment=name,
        base_url=f"http://{name}/v1",
        model=f"m-{name}",
        price=Price(input_per_mtok=Decimal(price), output_per_mtok=Decimal(price)),
        weight=weight,
    )


def table(**aliases: AliasRouting) -> RoutingTable:
    models = [
        dep("fast", "fast-a", price=3, weight=3),
        dep("fast", "fast-b", price=1, weight=1),
        dep("smart", "smart"),
        dep("backup", "backup"),
    ]
    return RoutingTable(models, RoutingSettings(max_attempts=4, aliases=aliases))


def test_alias_routes_to_its_deployment_subject() -> None:
    route = decide(request("smart"), table()).route
    assert (route.provider, route.deployment, route.upstream_model) == (
        "openai",
        "smart",
        "m-smart",
    )
    assert route.subject == "igw.work.openai.smart"
    assert route.attempt == 1


def test_strategies() -> None:
    rng = random.Random(7)
    weighted = Counter(decide(request("fast"), table(), rng).route.deployment for _ in range(400))
    assert 250 < weighted["fast-a"] < 350  # weight 3 of 4
    ordered = table(fast=AliasRouting(strategy="ordered"))
    assert decide(request("fast"), ordered).route.deployment == "fast-a"
    cheapest = table(fast=AliasRouting(strategy="lowest_cost"))
    assert decide(request("fast"), cheapest).route.deployment == "fast-b"


def test_later_attempts_try_the_group_then_the_fallback_chain() -> None:
    t = table(fast=AliasRouting(fallbacks=["smart"]), smart=AliasRouting(fallbacks=["backup"]))
    second = decide(request("fast", 2, tried=["fast-a"], last_error=ERROR), t)
    assert second.route.deployment == "fast-b" and second.delay_s == 0
    third = decide(request("fast", 3, tried=["fast-a", "fast-b"], last_error=ERROR), t)
    assert third.route.deployment == "smart" and third.route.reason == "fallback to smart"
    fourth = decide(request("fast", 4, tried=["fast-a", "fast-b", "smart"], last_error=ERROR), t)
    assert fourth.route.deployment == "backup"


def test_fallback_loops_end() -> None:
    t = table(smart=AliasRouting(fallbacks=["backup"]), backup=AliasRouting(fallbacks=["smart"]))
    assert t.chain("smart") == ["smart", "backup"]
    with pytest.raises(NoRoute) as caught:
        decide(request("smart", 3, tried=["smart", "backup"], last_error=ERROR), t)
    assert caught.value.error == ERROR


def test_retries_on_the_same_deployment_back_off_and_honour_retry_after() -> None:
    t = table(smart=AliasRouting(retries=1))
    limited = ERROR.model_copy(update={"retry_after": 2.5})
    again = decide(request("smart", 2, tried=["smart"], last_error=limited), t)
    assert again.route.deployment == "smart" and again.delay_s == 2.5
    with pytest.raises(NoRoute):
        decide(request("smart", 3, tried=["smart", "smart"], last_error=ERROR), t)


def test_no_retry_past_the_deadline_or_the_attempt_budget() -> None:
    t = table(smart=AliasRouting(retries=3))
    late = request("smart", 2, tried=["smart"], last_error=ERROR, deadline=100.0)
    with pytest.raises(NoRoute):
        decide(late, t, now=lambda: 99.99)
    with pytest.raises(NoRoute):
        decide(request("smart", 5, tried=["smart"] * 4, last_error=ERROR), t)


def test_backoff_grows_and_is_capped() -> None:
    routing = RoutingSettings(backoff_base_s=0.5, backoff_max_s=2.0)
    rng = random.Random(1)
    first = backoff_s(1, routing, None, rng)
    assert 0.25 <= first <= 0.5
    assert 1.0 <= backoff_s(5, routing, None, rng) <= 2.0


def test_unknown_alias() -> None:
    with pytest.raises(ModelNotFound):
        decide(request("nope"), table())
    assert table().aliases() == ["backup", "fast", "smart"]


def test_a_provider_pin_bypasses_strategy_breakers_and_fallbacks() -> None:
    models = [dep("mixed", "m-openai"), dep("mixed", "m-openai-2"), dep("other", "other")]
    models[1] = models[1].model_copy(update={"provider": "ollama"})
    t = RoutingTable(models, RoutingSettings(aliases={"mixed": AliasRouting(fallbacks=["other"])}))
    first = decide(request("mixed", pin_provider="ollama"), t)
    assert first.route.deployment == "m-openai-2" and first.route.reason == "pinned to ollama"
    with pytest.raises(NoRoute):
        decide(
            request("mixed", 2, pin_provider="ollama", tried=["m-openai-2"], last_error=ERROR), t
        )


def test_capabilities_decide_the_candidates() -> None:
    small = dep("chat", "small").model_copy(
        update={"context_window": 100, "supports_vision": False}
    )
    big = dep("chat", "big", price=5).model_copy(update={"context_window": 10_000})
    t = RoutingTable(
        [small, big], RoutingSettings(aliases={"chat": AliasRouting(strategy="ordered")})
    )
    assert decide(request("chat"), t).route.deployment == "small"
    long = request("chat", needs=Needs(context_tokens=500))
    assert decide(long, t).route.deployment == "big"
    assert decide(request("chat", needs=Needs(vision=True)), t).route.deployment == "big"
    with pytest.raises(NoRoute) as caught:
        decide(request("chat", needs=Needs(context_tokens=50_000)), t)
    assert caught.value.error.status == 400 and caught.value.error.code == "no_capable_deployment"


def test_auto_scores_latency_and_cost_among_healthy_deployments() -> None:
    cheap_slow, dear_fast = dep("a", "cheap-slow", price=1), dep("b", "dear-fast", price=10)
    embed = dep("e", "embedder", price=0).model_copy(update={"kind": "embeddings"})
    t = RoutingTable([cheap_slow, dear_fast, embed], RoutingSettings())
    health = HealthBook()
    for name, ms in (("cheap-slow", 2000.0), ("dear-fast", 100.0)):
        event = UsageEvent(
            request_id="r", attempt=1, ts=0, model="x", provider="openai", deployment=name,
            upstream_model="m", stream=False, prompt_tokens=1, completion_tokens=1,
            cost_usd=Decimal(0), latency_ms=ms, ttft_ms=ms, status="ok",
        )  # fmt: skip
        outcome = Outcome.from_json(event.model_dump_json().encode())
        assert outcome is not None
        health.record(outcome, 0.0, mine=False)
    # latency 0.6 * (2000/2000) + cost 0.4 * (2/20) = 0.64 against 0.6 * 0.05 + 0.4 * 1 = 0.43
    assert decide(request("auto"), t, health=health).route.deployment == "dear-fast"
    costly = RoutingSettings(auto=AutoRouting(latency_weight=0.1, cost_weight=0.9))
    t2 = RoutingTable([cheap_slow, dear_fast, embed], costly)
    assert decide(request("auto"), t2, health=health).route.deployment == "cheap-slow"
    second = decide(request("auto", 2, tried=["dear-fast"], last_error=ERROR), t, health=health)
    assert second.route.deployment == "cheap-slow"


def test_a_context_window_error_falls_back_to_a_larger_window_only() -> None:
    small = dep("chat", "small").model_copy(update={"context_window": 8_000})
    same = dep("mid", "mid").model_copy(update={"context_window": 8_000})
    big = dep("long", "long").model_copy(update={"context_window": 100_000})
    routing = RoutingSettings(aliases={"chat": AliasRouting(fallbacks=["mid", "long"], retries=2)})
    t = RoutingTable([small, same, big], routing)
    error = ErrorInfo(
        status=400, type="invalid_request_error", message="too long",
        code="context_length_exceeded", fallback=True,
    )  # fmt: skip
    second = decide(request("chat", 2, tried=["small"], last_error=error), t)
    assert second.route.deployment == "long" and second.delay_s == 0
    with pytest.raises(NoRoute):  # no retry of the same deployment after such an error
        decide(request("chat", 3, tried=["small", "long"], last_error=error), t)


def test_hedging_is_armed_from_the_p95_time_to_first_token() -> None:
    routing = RoutingSettings(aliases={"fast": AliasRouting(strategy="ordered", hedge=True)})
    t = RoutingTable([dep("fast", "fast-a"), dep("fast", "fast-b")], routing)
    health = HealthBook()
    assert decide(request("fast"), t, health=health).route.hedge_after_s is None  # no data yet
    for ms in (100.0, 200.0, 900.0):
        health.record(Outcome("r", 1, "fast-a", "ok", 200, ms, ms), 0.0, mine=False)
    assert decide(request("fast"), t, health=health).route.hedge_after_s == pytest.approx(0.9)
    lone = RoutingTable([dep("fast", "fast-a")], routing)  # nowhere to hedge to
    assert decide(request("fast"), lone, health=health).route.hedge_after_s is None
    hedge = request("fast", 2, tried=["fast-a"], hedge=True)
    assert decide(hedge, t, health=health).route.deployment == "fast-b"
