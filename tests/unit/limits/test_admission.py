"""Which limits apply to a request, and what admission refuses, on an in-memory KV."""

from __future__ import annotations

from typing import Any

import pytest

from schemas.keys import KeyRecord, TeamRecord
from services.ingress.auth import OPEN, KeyStore, Principal
from services.runtime.admission import Admission
from services.runtime.errors import BudgetExceeded, RateLimited
from services.runtime.settings import Settings
from tests.unit.limits.fakes import FakeKv

BODY: dict[str, Any] = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 10}


def settings(**limits: Any) -> Settings:
    model = {
        "alias": "m",
        "provider": "openai",
        "base_url": "http://127.0.0.1:1/v1",
        "model": "m",
        "price": {"input_per_mtok": "1000000", "output_per_mtok": "2000000"},
    }
    return Settings.model_validate({"models": [model], "limits": limits})


def admission(config: Settings, keys: KeyStore | None = None) -> Admission:
    spend: Any = FakeKv()
    windows: Any = FakeKv()
    return Admission(config, keys, spend=spend, limits=windows)


def principal(**fields: Any) -> Principal:
    record = KeyRecord(token="tok", created_at=0, **fields)
    return Principal(role="user", token="tok", record=record, team_id=record.team_id)


async def test_nothing_applies_to_an_unlimited_caller() -> None:
    gate = admission(settings())
    assert await gate.admit(OPEN, "m", BODY, "r1", deadline=10**10) is None
    assert await gate.admit(principal(), "m", BODY, "r2", deadline=10**10) is None


async def test_global_and_per_model_limits_cover_every_caller() -> None:
    gate = admission(settings(global_rpm=2, models={"m": {"rpm": 5}}))
    for n in range(2):
        assert await gate.admit(OPEN, "m", BODY, f"r{n}", deadline=10**10) is not None
    with pytest.raises(RateLimited) as caught:
        await gate.admit(OPEN, "m", BODY, "r3", deadline=10**10)
    assert "global" in caught.value.message and caught.value.retry_after is not None


async def test_a_team_limit_is_shared_by_its_keys() -> None:
    keys = KeyStore(settings().auth)
    keys.teams["t"] = TeamRecord(team_id="t", rpm_limit=1, created_at=0)
    gate = admission(settings(), keys)
    assert await gate.admit(principal(team_id="t"), "m", BODY, "r1", deadline=10**10)
    with pytest.raises(RateLimited):
        await gate.admit(principal(team_id="t"), "m", BODY, "r2", deadline=10**10)


async def test_the_worst_case_is_held_against_the_budget() -> None:
    # 6 estimated prompt tokens x 1.5 at $1 each, plus 10 output tokens at $2: $29
    gate = admission(settings())
    rich = principal(max_budget=58.0)
    assert await gate.admit(rich, "m", BODY, "r1", deadline=10**10)
    assert await gate.admit(rich, "m", BODY, "r2", deadline=10**10)
    with pytest.raises(BudgetExceeded) as caught:
        await gate.admit(rich, "m", BODY, "r3", deadline=10**10)
    assert caught.value.status == 402 and caught.value.code == "budget_exceeded"
    held = await gate.spend_of("key", "tok")
    assert held["spend"] == 0 and held["spend_held"] == 58.0
