"""Prometheus series of every IGW service, each process on its own registry.

Each service builds one metrics object at start-up (a fresh ``CollectorRegistry``
holding only the series that service emits, plus the ``process_*`` and
``python_*`` collectors) and serves it on ``GET /metrics``: the ingress on its
HTTP port, the others on ``metrics.port`` (:mod:`services.runtime.metrics_http`).
Every fact is counted by exactly one service, so summing a series over the fleet
never counts anything twice:

=============================================  =========  ====================================
series (labels)                                service    one count per
=============================================  =========  ====================================
llm_gateway_requests_total                     ingress    inference request that named a
  (status, code, model, provider)                         configured model, when its answer
                                                          ended (cache hits and budget or
                                                          rate-limit refusals included)
llm_gateway_provider_requests_total (provider) ingress    such request a provider answered
llm_gateway_cache_hits_total (model)           ingress    answer served from the cache
llm_rate_limit_exceeded_total (code)           ingress    429 answered (admission, the
                                                          router's capacity wait, upstream)
llm_gateway_budget_exceeded_total              ingress    402 answered by admission
llm_gateway_in_flight_requests                 ingress    (gauge) requests awaiting answers
gen_ai_server_time_to_first_token_seconds      ingress    successful stream: accepted to
                                                          first chunk
gen_ai_server_time_per_output_token_seconds    ingress    successful stream of 2+ tokens
llm_provider_requests_total (provider, status) worker     attempt (upstream call), once its
llm_provider_errors_total (provider,                      usage event is stored
  error_type)
llm_provider_latency_seconds (provider)        worker     attempt that was not cancelled
gen_ai_client_operation_duration_seconds       worker     attempt that was not cancelled
gen_ai_client_token_usage                      worker     attempt that used tokens, per type
llm_gateway_tokens_total (model, provider,     accounting usage event stored in ClickHouse
  type)                                                   (batch items and failed attempts
llm_gateway_cost_total (model, provider)                  included: what was billed)
llm_gateway_model_cost_total (model)
llm_gateway_breaker_state (deployment,         router     (gauge) 0 closed, 1 half-open,
  provider)                                               2 open
llm_gateway_queue_depth (priority)             router     (gauge) requests stored in
llm_gateway_queue_age_seconds (priority)                  IGW_REQUESTS; age of the oldest
llm_gateway_consumer_pending (consumer)        router     (gauge) per durable consumer: not
llm_gateway_consumer_ack_pending (consumer)               yet delivered, delivered unacked,
llm_gateway_consumer_max_ack_pending                      and its limit
  (consumer)
llm_gateway_batch_items_total (status)         batcher    batch item answered
llm_gateway_batches_total (status)             batcher    batch that ended
=============================================  =========  ====================================

The router's gauges describe shared state (the bus, the fleet-wide breakers):
every router replica reports the same values, so aggregate them with ``max``.
Label values are bounded: ``model`` is a configured alias (or ``auto``),
``provider`` a configured provider, ``cache``, ``router`` or ``none``.

Recording is a counter increment or a histogram observation, never an await;
the gauges are computed when scraped. The GenAI histograms follow the
OpenTelemetry conventions (names, attribute labels, bucket boundaries), with
``.`` turned into ``_`` and the unit as a suffix.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

from prometheus_client import (
    GC_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from schemas.bus import ReplyMeta, UsageEvent

disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series: they double the output

TOKEN_BUCKETS = tuple(4.0**i for i in range(14))  # 1 .. 67,108,864
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48,
                    40.96, 81.92)  # fmt: skip
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
                5.0, 7.5, 10.0)  # fmt: skip
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                   120.0)  # fmt: skip

CLIENT_CLOSED = 499
"""``code`` of a request whose client went away before its answer ended."""
NO_PROVIDER = "none"
BREAKER_VALUES = {"closed": 0, "half_open": 1, "open": 2}

GENAI_LABELS = ("gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model")


def new_registry() -> CollectorRegistry:
    """A registry with the process, platform and garbage-collector collectors."""
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    if GC_COLLECTOR is not None:
        GCCollector(registry=registry)
    return registry


def status_of(code: int) -> str:
    """The ``status`` label of an answer's HTTP status: ok, client_error, error, cancelled."""
    if code == CLIENT_CLOSED:
        return "cancelled"
    if code < 400:
        return "ok"
    return "client_error" if code < 500 else "error"


class ClosedStream(Protocol):
    """What the ingress knows about a request's replies once they are closed
    (:class:`services.ingress.replies.ReplyStream`)."""

    @property
    def model(self) -> str: ...

    @property
    def operation(self) -> str: ...

    @property
    def provider(self) -> str: ...

    @property
    def terminal(self) -> ReplyMeta | None: ...

    @property
    def failure(self) -> int | None: ...

    @property
    def opened(self) -> float: ...

    @property
    def first_chunk_at(self) -> float | None: ...


class IngressMetrics:
    """Requests as their clients saw them (see the module docstring)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry or new_registry()
        self.requests = Counter(
            "llm_gateway_requests",
            "Inference requests by outcome (status: ok, client_error, error, cancelled; "
            "code: the HTTP status, or the error event's status for a stream that failed).",
            ["status", "code", "model", "provider"],
            registry=r,
        )
        self.provider_requests = Counter(
            "llm_gateway_provider_requests",
            "Inference requests answered by a provider.",
            ["provider"],
            registry=r,
        )
        self.cache_hits = Counter(
            "llm_gateway_cache_hits",
            "Answers served from the response cache.",
            ["model"],
            registry=r,
        )
        self.rate_limited = Counter(
            "llm_rate_limit_exceeded",
            "Requests answered with 429, by error code.",
            ["code"],
            registry=r,
        )
        self.budget_exceeded = Counter(
            "llm_gateway_budget_exceeded",
            "Requests refused because a key's, user's or team's budget was exhausted.",
            registry=r,
        )
        self.in_flight = Gauge(
            "llm_gateway_in_flight_requests",
            "Requests published to the bus and still awaiting the end of their answer.",
            registry=r,
        )
        self.ttft = Histogram(
            "gen_ai_server_time_to_first_token_seconds",
            "Time from accepting a streamed request to its first chunk.",
            GENAI_LABELS,
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.tpot = Histogram(
            "gen_ai_server_time_per_output_token_seconds",
            "Time per output token after the first, of successful streams.",
            GENAI_LABELS,
            buckets=TPOT_BUCKETS,
            registry=r,
        )

    def track_in_flight(self, count: Callable[[], int]) -> None:
        self.in_flight.set_function(count)

    def cache_hit(self, model: str) -> None:
        self.cache_hits.labels(model).inc()
        self.requests.labels("ok", "200", model, "cache").inc()

    def refused(self, model: str, status: int, code: str | None) -> None:
        """A request admission refused (429, 402, 503) before it reached the bus."""
        self.requests.labels(status_of(status), str(status), model, NO_PROVIDER).inc()
        self._refusal(status, code)

    def closed(self, stream: ClosedStream, now: float | None = None) -> None:
        """A published request's replies are closed (``now``: ``time.monotonic()``)."""
        now = time.monotonic() if now is None else now
        terminal = stream.terminal
        provider = (terminal.provider if terminal is not None else "") or stream.provider
        if stream.failure is not None:  # the deadline, a broken stream, a shutdown
            code = stream.failure
        elif terminal is not None:
            code = terminal.error.status if terminal.error is not None else 200
            if terminal.error is not None:
                self._refusal(code, terminal.error.code)
        else:  # no answer and no error: the client went away
            code = CLIENT_CLOSED
        status = status_of(code)
        self.requests.labels(status, str(code), stream.model, provider or NO_PROVIDER).inc()
        if provider:
            self.provider_requests.labels(provider).inc()
        first = stream.first_chunk_at
        if first is None or code != 200 or terminal is None:
            return
        labels = (stream.operation, provider, stream.model)
        self.ttft.labels(*labels).observe(first - stream.opened)
        per_token = time_per_output_token(first, now, terminal)
        if per_token is not None:
            self.tpot.labels(*labels).observe(per_token)

    def _refusal(self, status: int, code: str | None) -> None:
        if status == 429:
            self.rate_limited.labels(code or "rate_limited").inc()
        elif status == 402:
            self.budget_exceeded.inc()


def time_per_output_token(first: float, end: float, terminal: ReplyMeta) -> float | None:
    """Seconds per output token after the first (None without two tokens of usage)."""
    tokens = terminal.usage.completion_tokens if terminal.usage is not None else 0
    if tokens < 2:
        return None
    return max(0.0, end - first) / (tokens - 1)


class WorkerMetrics:
    """Upstream calls, one observation per attempt (see the module docstring)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry or new_registry()
        self.requests = Counter(
            "llm_provider_requests",
            "Upstream attempts by outcome (ok, error, cancelled).",
            ["provider", "status"],
            registry=r,
        )
        self.errors = Counter(
            "llm_provider_errors",
            "Failed upstream attempts by error code.",
            ["provider", "error_type"],
            registry=r,
        )
        self.latency = Histogram(
            "llm_provider_latency_seconds",
            "Duration of upstream attempts that were not cancelled.",
            ["provider"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.duration = Histogram(
            "gen_ai_client_operation_duration_seconds",
            "GenAI operation duration (OpenTelemetry gen_ai.client.operation.duration).",
            [*GENAI_LABELS, "error_type"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.tokens = Histogram(
            "gen_ai_client_token_usage",
            "Tokens used per operation (OpenTelemetry gen_ai.client.token.usage).",
            [*GENAI_LABELS, "gen_ai_token_type"],
            buckets=TOKEN_BUCKETS,
            registry=r,
        )

    def attempt(self, usage: UsageEvent, operation: str) -> None:
        """One finished attempt, after its usage event was stored."""
        provider = usage.provider
        self.requests.labels(provider, usage.status).inc()
        if usage.status == "error":
            self.errors.labels(provider, usage.error_type or "unknown").inc()
        if usage.status == "cancelled":
            return
        seconds = usage.latency_ms / 1000
        self.latency.labels(provider).observe(seconds)
        genai = (operation, provider, usage.upstream_model)
        error = (usage.error_type or "unknown") if usage.status == "error" else ""
        self.duration.labels(*genai, error).observe(seconds)
        if usage.prompt_tokens or usage.completion_tokens:
            self.tokens.labels(*genai, "input").observe(usage.prompt_tokens)
            self.tokens.labels(*genai, "output").observe(usage.completion_tokens)


class AccountingMetrics:
    """What was billed, from the usage events stored (see the module docstring)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry or new_registry()
        self.tokens = Counter(
            "llm_gateway_tokens",
            "Tokens accounted, by type (input, output).",
            ["model", "provider", "type"],
            registry=r,
        )
        self.cost = Counter(
            "llm_gateway_cost",
            "Cost accounted, in USD.",
            ["model", "provider"],
            registry=r,
        )
        self.model_cost = Counter(
            "llm_gateway_model_cost",
            "Cost accounted per model alias, in USD.",
            ["model"],
            registry=r,
        )

    def stored(self, events: Iterable[UsageEvent]) -> None:
        """Usage events the store accepted (a redelivered batch counts again)."""
        for event in events:
            self.tokens.labels(event.model, event.provider, "input").inc(event.prompt_tokens)
            self.tokens.labels(event.model, event.provider, "output").inc(event.completion_tokens)
            cost = float(event.cost_usd)
            self.cost.labels(event.model, event.provider).inc(cost)
            self.model_cost.labels(event.model).inc(cost)


class BreakerCollector:
    """``llm_gateway_breaker_state``, read from the router's health book when scraped."""

    def __init__(self, states: Callable[[], Iterable[tuple[str, str, str]]]) -> None:
        self._states = states
        """(deployment, provider, state) with state closed, half_open or open."""

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "llm_gateway_breaker_state",
            "Circuit breaker per deployment: 0 closed, 1 half-open, 2 open.",
            labels=["deployment", "provider"],
        )
        for deployment, provider, state in self._states():
            family.add_metric([deployment, provider], BREAKER_VALUES[state])
        yield family


class RouterMetrics:
    """Breakers, queues and consumers, computed when scraped (see the module docstring)."""

    def __init__(
        self,
        breakers: Callable[[], Iterable[tuple[str, str, str]]],
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.registry = r = registry or new_registry()
        r.register(BreakerCollector(breakers))
        self.queue_depth = Gauge(
            "llm_gateway_queue_depth",
            "Requests stored in IGW_REQUESTS (waiting or being routed), by priority.",
            ["priority"],
            registry=r,
        )
        self.queue_age = Gauge(
            "llm_gateway_queue_age_seconds",
            "Age of the oldest request stored in IGW_REQUESTS, by priority (0 when empty).",
            ["priority"],
            registry=r,
        )
        self.consumer_pending = Gauge(
            "llm_gateway_consumer_pending",
            "Messages a durable consumer has not yet been delivered.",
            ["consumer"],
            registry=r,
        )
        self.ack_pending = Gauge(
            "llm_gateway_consumer_ack_pending",
            "Messages delivered to a durable consumer and not yet acknowledged.",
            ["consumer"],
            registry=r,
        )
        self.max_ack_pending = Gauge(
            "llm_gateway_consumer_max_ack_pending",
            "A durable consumer's max_ack_pending: at it, delivery stops.",
            ["consumer"],
            registry=r,
        )


class BatchMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry or new_registry()
        self.items = Counter(
            "llm_gateway_batch_items",
            "Batch items answered (ok: a 2xx answer; error: any other).",
            ["status"],
            registry=r,
        )
        self.batches = Counter(
            "llm_gateway_batches",
            "Batches that ended, by final status.",
            ["status"],
            registry=r,
        )
