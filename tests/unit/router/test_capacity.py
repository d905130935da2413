"""Rate-limit buckets: how long a deployment makes requests wait."""

from __future__ import annotations

import pytest

from schemas.bus import Needs, RoutingView
from services.router.capacity import Capacity
from services.router.decide import NoCapacity, RoutingTable, decide
from services.runtime.settings import ModelDeployment, RoutingSettings


def limited(rpm: int | None = None, tpm: int | None = None) -> ModelDeployment:
    return ModelDeployment(
        alias="m",
        provider="openai",
        base_url="http://x/v1",
        model="m",
        rpm_limit=rpm,
        tpm_limit=tpm,
    )


def test_requests_per_minute_refill_continuously() -> None:
    capacity, d = Capacity(), limited(rpm=60)
    assert capacity.wait_s(d, 10, 0.0) == 0
    capacity.take(d, 10, 0.0)
    assert capacity.wait_s(d, 10, 0.0) == pytest.approx(1.0)
    assert capacity.wait_s(d, 10, 0.5) == pytest.approx(0.5)
    assert capacity.wait_s(d, 10, 1.0) == 0


def test_tokens_per_minute_and_no_limits() -> None:
    capacity, d = Capacity(), limited(tpm=600)  # 10 tokens/s, a bucket of 100
    capacity.take(d, 100, 0.0)
    assert capacity.wait_s(d, 50, 0.0) == pytest.approx(5.0)
    assert Capacity().wait_s(limited(), 10**6, 0.0) == 0


def test_decide_reports_the_shortest_wait_when_every_deployment_is_full() -> None:
    table = RoutingTable([limited(rpm=60)], RoutingSettings())
    capacity = Capacity()
    request = RoutingView(
        request_id="r", model="m", reply_subject="x", needs=Needs(context_tokens=5)
    )
    decide(request, table, capacity=capacity, now=lambda: 100.0)
    with pytest.raises(NoCapacity) as caught:
        decide(request, table, capacity=capacity, now=lambda: 100.25)
    assert caught.value.wait_s == pytest.approx(0.75)
