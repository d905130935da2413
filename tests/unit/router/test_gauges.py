"""The router's gauges: breaker states from the health book, queue depth and age and
consumer counts from (fake) JetStream answers."""

from __future__ import annotations

import datetime as dt
import time
from types import SimpleNamespace
from typing import Any

from nats.js.errors import NotFoundError

from schemas import subjects as s
from services.router.gauges import BusGauges, breaker_states, consumers
from services.router.health import BreakerPolicy, HealthBook, Outcome
from services.runtime.metrics import RouterMetrics
from services.runtime.settings import ModelDeployment, Settings


def settings() -> Settings:
    models = [
        ModelDeployment(alias=a, provider="openai", base_url="http://x/v1", model="m")
        for a in ("good", "bad")
    ]
    return Settings(models=models)


def test_breaker_states_closed_open_and_half_open() -> None:
    book = HealthBook(BreakerPolicy(window=4, min_calls=2, error_rate=0.5, cooldown_s=10))
    for attempt in (1, 2):
        failure = Outcome("r", attempt, "bad", "error", 500, 1.0, None)
        book.record(failure, now=100.0, mine=False)
    cfg = settings()
    assert list(breaker_states(cfg, book, 105.0)) == [
        ("good", "openai", "closed"),
        ("bad", "openai", "open"),
    ]
    assert {d: st for d, _, st in breaker_states(cfg, book, 111.0)}["bad"] == "half_open"


def test_every_service_consumer_is_watched() -> None:
    names = {name for _, name in consumers(settings())}
    assert names == {
        "router",
        "worker-openai",
        "accounting",
        "batch-submit",
        "batch-replies",
        "batch-cancels",
    }


class FakeJetStream:
    def __init__(self, counts: dict[str, int], oldest_age_s: float) -> None:
        self.counts = counts
        self.oldest = dt.datetime.fromtimestamp(time.time() - oldest_age_s, dt.UTC)
        self.calls = 0

    async def stream_info(self, name: str, subjects_filter: str | None = None) -> Any:
        self.calls += 1
        assert (name, subjects_filter) == (s.STREAM_REQUESTS, s.REQUESTS_WILDCARD)
        state = SimpleNamespace(subjects=self.counts, first_seq=7)
        return SimpleNamespace(state=state)

    async def get_msg(self, stream: str, seq: int, subject: str, next: bool) -> Any:
        assert (seq, next) == (7, True)
        return SimpleNamespace(time=self.oldest)

    async def consumer_info(self, stream: str, name: str) -> Any:
        if name.startswith("batch-"):
            raise NotFoundError
        config = SimpleNamespace(max_ack_pending=1024)
        return SimpleNamespace(num_pending=3, num_ack_pending=2, config=config)


async def test_queue_depth_age_and_consumers() -> None:
    metrics = RouterMetrics(list)
    gauges = BusGauges(settings(), metrics)
    js = FakeJetStream({s.request_subject("interactive"): 4}, oldest_age_s=12.0)
    await gauges.refresh(js)  # type: ignore[arg-type]
    r = metrics.registry
    assert r.get_sample_value("llm_gateway_queue_depth", {"priority": "interactive"}) == 4
    assert r.get_sample_value("llm_gateway_queue_depth", {"priority": "batch"}) == 0
    age = r.get_sample_value("llm_gateway_queue_age_seconds", {"priority": "interactive"})
    assert age is not None and 11.5 < age < 15
    assert r.get_sample_value("llm_gateway_queue_age_seconds", {"priority": "batch"}) == 0
    consumer = {"consumer": "worker-openai"}
    assert r.get_sample_value("llm_gateway_consumer_pending", consumer) == 3
    assert r.get_sample_value("llm_gateway_consumer_ack_pending", consumer) == 2
    assert r.get_sample_value("llm_gateway_consumer_max_ack_pending", consumer) == 1024
    assert r.get_sample_value("llm_gateway_consumer_pending", {"consumer": "batch-submit"}) is None
    await gauges.refresh(js)  # type: ignore[arg-type]
    assert js.calls == 1  # a second scrape within a second asks the bus nothing
