"""The Prometheus series of each service: what one finished request, attempt or
usage event adds, and that no two services emit the same series."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from decimal import Decimal

import pytest
from prometheus_client import CollectorRegistry

from schemas.bus import ErrorInfo, ReplyMeta, UsageEvent
from schemas.openai_chat import Usage
from services.runtime.metrics import (
    AccountingMetrics,
    BatchMetrics,
    IngressMetrics,
    RouterMetrics,
    WorkerMetrics,
    status_of,
    time_per_output_token,
)


@dataclass
class Closed:
    model: str = "sim"
    operation: str = "chat"
    provider: str = ""
    terminal: ReplyMeta | None = None
    failure: int | None = None
    opened: float = 100.0
    first_chunk_at: float | None = None


def terminal(
    provider: str = "openai", error: ErrorInfo | None = None, completion_tokens: int = 0
) -> ReplyMeta:
    usage = Usage(prompt_tokens=5, completion_tokens=completion_tokens, total_tokens=5)
    return ReplyMeta(
        kind="terminal",
        request_id="r",
        attempt=1,
        seq=3,
        provider=provider,
        deployment="d",
        error=error,
        usage=usage if completion_tokens else None,
    )


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def series(registry: CollectorRegistry) -> set[str]:
    return {
        family.name
        for family in registry.collect()
        if not family.name.startswith(("process_", "python_"))
    }


@pytest.mark.parametrize(
    ("code", "status"),
    [(200, "ok"), (304, "ok"), (402, "client_error"), (429, "client_error"), (499, "cancelled"),
     (502, "error"), (504, "error")],
)  # fmt: skip
def test_status_of_an_http_status(code: int, status: str) -> None:
    assert status_of(code) == status


def test_a_successful_stream_counts_once_with_its_first_token_timings() -> None:
    m = IngressMetrics()
    stream = Closed(terminal=terminal(completion_tokens=11), first_chunk_at=100.25)
    m.closed(stream, now=101.25)
    r = m.registry
    labels = {"status": "ok", "code": "200", "model": "sim", "provider": "openai"}
    assert value(r, "llm_gateway_requests_total", **labels) == 1
    assert value(r, "llm_gateway_provider_requests_total", provider="openai") == 1
    genai = {
        "gen_ai_operation_name": "chat",
        "gen_ai_provider_name": "openai",
        "gen_ai_request_model": "sim",
    }
    assert value(r, "gen_ai_server_time_to_first_token_seconds_sum", **genai) == 0.25
    assert value(r, "gen_ai_server_time_per_output_token_seconds_sum", **genai) == 0.1


def test_a_non_streaming_answer_has_no_first_token_timing() -> None:
    m = IngressMetrics()
    m.closed(Closed(terminal=terminal(completion_tokens=5)), now=101)
    assert value(m.registry, "llm_gateway_requests_total", code="200", model="sim",
                 provider="openai", status="ok") == 1  # fmt: skip
    assert m.registry.get_sample_value("gen_ai_server_time_to_first_token_seconds_count") is None


def test_an_error_event_counts_its_status_and_a_429_its_code() -> None:
    m = IngressMetrics()
    limited = ErrorInfo(
        status=429, type="rate_limit_error", message="x", code="rate_limit_exceeded"
    )
    m.closed(Closed(terminal=terminal(provider="", error=limited)), now=101)
    failed = ErrorInfo(status=502, type="upstream_error", message="x", code="upstream_error")
    m.closed(Closed(terminal=terminal(error=failed), first_chunk_at=100.1), now=101)
    r = m.registry
    assert value(r, "llm_gateway_requests_total", status="client_error", code="429", model="sim",
                 provider="none") == 1  # fmt: skip
    assert value(r, "llm_rate_limit_exceeded_total", code="rate_limit_exceeded") == 1
    assert value(r, "llm_gateway_requests_total", status="error", code="502", model="sim",
                 provider="openai") == 1  # fmt: skip
    assert r.get_sample_value("gen_ai_server_time_to_first_token_seconds_count") is None


def test_a_stream_without_a_terminal_event_is_its_failure_or_a_client_that_left() -> None:
    m = IngressMetrics()
    m.closed(Closed(provider="openai", failure=504, first_chunk_at=100.1), now=130)
    m.closed(Closed(provider="openai", first_chunk_at=100.1), now=101)
    r = m.registry
    assert value(r, "llm_gateway_requests_total", status="error", code="504", model="sim",
                 provider="openai") == 1  # fmt: skip
    assert value(r, "llm_gateway_requests_total", status="cancelled", code="499", model="sim",
                 provider="openai") == 1  # fmt: skip


def test_refusals_and_cache_hits() -> None:
    m = IngressMetrics()
    m.refused("sim", 402, "budget_exceeded")
    m.refused("sim", 429, "parallel_request_limit_reached")
    m.cache_hit("sim")
    r = m.registry
    assert value(r, "llm_gateway_budget_exceeded_total") == 1
    assert value(r, "llm_rate_limit_exceeded_total", code="parallel_request_limit_reached") == 1
    assert value(r, "llm_gateway_requests_total", status="client_error", code="402", model="sim",
                 provider="none") == 1  # fmt: skip
    assert value(r, "llm_gateway_cache_hits_total", model="sim") == 1
    assert value(r, "llm_gateway_requests_total", status="ok", code="200", model="sim",
                 provider="cache") == 1  # fmt: skip
    assert value(r, "llm_gateway_provider_requests_total", provider="cache") == 0


def test_in_flight_is_read_when_scraped() -> None:
    m = IngressMetrics()
    flights = [3]
    m.track_in_flight(lambda: flights[0])
    assert value(m.registry, "llm_gateway_in_flight_requests") == 3
    flights[0] = 0
    assert value(m.registry, "llm_gateway_in_flight_requests") == 0


def test_time_per_output_token_needs_two_tokens() -> None:
    assert time_per_output_token(1.0, 2.0, terminal(completion_tokens=1)) is None
    assert time_per_output_token(1.0, 2.0, terminal()) is None
    assert time_per_output_token(1.0, 3.0, terminal(completion_tokens=5)) == 0.5


def usage(**fields: object) -> UsageEvent:
    base: dict[str, object] = {
        "request_id": "r",
        "attempt": 1,
        "ts": 0.0,
        "model": "sim",
        "provider": "openai",
        "deployment": "d",
        "upstream_model": "gpt-x",
        "prompt_tokens": 7,
        "completion_tokens": 16,
        "latency_ms": 250.0,
        "cost_usd": Decimal("0.000012"),
    }
    return UsageEvent.model_validate({**base, **fields})


def test_worker_attempts() -> None:
    m = WorkerMetrics()
    m.attempt(usage(), "chat")
    m.attempt(usage(status="error", error_type="upstream_timeout", prompt_tokens=0,
                    completion_tokens=0), "chat")  # fmt: skip
    m.attempt(usage(status="cancelled"), "chat")
    r = m.registry
    for status in ("ok", "error", "cancelled"):
        assert value(r, "llm_provider_requests_total", provider="openai", status=status) == 1
    assert value(r, "llm_provider_errors_total", provider="openai",
                 error_type="upstream_timeout") == 1  # fmt: skip
    assert value(r, "llm_provider_latency_seconds_count", provider="openai") == 2
    assert value(r, "llm_provider_latency_seconds_sum", provider="openai") == 0.5
    genai = {
        "gen_ai_operation_name": "chat",
        "gen_ai_provider_name": "openai",
        "gen_ai_request_model": "gpt-x",
    }
    assert value(r, "gen_ai_client_operation_duration_seconds_count", **genai, error_type="") == 1
    assert value(r, "gen_ai_client_operation_duration_seconds_count", **genai,
                 error_type="upstream_timeout") == 1  # fmt: skip
    # the cancelled attempt's tokens are billed (accounting) but it is no finished operation
    assert value(r, "gen_ai_client_token_usage_sum", **genai, gen_ai_token_type="output") == 16
    assert value(r, "gen_ai_client_token_usage_count", **genai, gen_ai_token_type="input") == 1


def test_accounting_counts_what_was_stored() -> None:
    m = AccountingMetrics()
    m.stored([usage(), usage(attempt=2), usage(provider="cache", prompt_tokens=0,
                                              completion_tokens=0, cost_usd=0)])  # fmt: skip
    r = m.registry
    labels = {"model": "sim", "provider": "openai"}
    assert value(r, "llm_gateway_tokens_total", **labels, type="input") == 14
    assert value(r, "llm_gateway_tokens_total", **labels, type="output") == 32
    assert value(r, "llm_gateway_cost_total", **labels) == pytest.approx(0.000024)
    assert value(r, "llm_gateway_model_cost_total", model="sim") == pytest.approx(0.000024)
    assert value(r, "llm_gateway_cost_total", model="sim", provider="cache") == 0


def test_router_breakers_are_read_when_scraped() -> None:
    states = [("a", "openai", "closed"), ("b", "openai", "half_open"), ("c", "azure", "open")]
    r = RouterMetrics(lambda: states).registry
    assert value(r, "llm_gateway_breaker_state", deployment="a", provider="openai") == 0
    assert value(r, "llm_gateway_breaker_state", deployment="b", provider="openai") == 1
    assert value(r, "llm_gateway_breaker_state", deployment="c", provider="azure") == 2


def test_every_series_belongs_to_one_service() -> None:
    registries = {
        "ingress": IngressMetrics().registry,
        "router": RouterMetrics(list).registry,
        "worker": WorkerMetrics().registry,
        "accounting": AccountingMetrics().registry,
        "batcher": BatchMetrics().registry,
    }
    owned = {name: series(r) for name, r in registries.items()}
    assert all(owned.values())
    for (a, first), (b, second) in itertools.combinations(owned.items(), 2):
        assert not first & second, f"{a} and {b} both emit {first & second}"
    assert "process_cpu_seconds" in {f.name for f in registries["router"].collect()}
