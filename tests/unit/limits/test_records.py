"""Spend records, the settler's exactly-once rule, and KV-safe names."""

from __future__ import annotations

import orjson

from schemas.limits import Hold, SpendRecord, kv_token, spend_key
from services.accounting.settler import Charge, apply, charges_of


def test_ids_that_kv_keys_cannot_hold_are_encoded() -> None:
    assert kv_token("team_1-a") == "team_1-a"
    encoded = kv_token("john+ml@example.com")
    assert encoded.startswith("b64.") and "@" not in encoded and "+" not in encoded
    assert kv_token("a.b") != kv_token("a_b")
    assert spend_key("user", "ann@example.com").startswith("spend.user.b64.")


def test_holds_count_until_they_lapse() -> None:
    record = SpendRecord(holds={"r1": Hold(amount=2.0, expires=100.0)})
    record.holds["r2"] = Hold(amount=3.0, expires=200.0)
    assert record.held(50.0) == 5.0
    assert record.held(150.0) == 3.0
    record.prune(150.0)
    assert list(record.holds) == ["r2"]


def test_a_budget_period_rolls_over_and_clears_spend() -> None:
    record = SpendRecord(spent=4.0, period_s=10.0)
    record.roll(1000.0)
    assert record.period_start == 1000.0 and record.spent == 4.0
    record.roll(1009.0)
    assert record.spent == 4.0
    record.roll(1035.0)  # three periods later: the current one began at 1030
    assert record.spent == 0.0 and record.period_start == 1030.0
    assert record.resets_at() == 1040.0
    assert SpendRecord(spent=1.0).resets_at() is None


def test_slots_lapse() -> None:
    record = SpendRecord(slots={"a": 10.0, "b": 30.0})
    assert record.live_slots(20.0) == 1
    record.prune(20.0)
    assert list(record.slots) == ["b"]


def event(request_id: str, cost: str, **extra: object) -> bytes:
    return orjson.dumps({"request_id": request_id, "cost_usd": cost, **extra})


def test_a_usage_event_charges_its_key_user_and_team() -> None:
    charges = charges_of(7, event("r1", "0.25", key_id="tok", user_id="u@x", tenant="t"))
    assert [k for k, _ in charges] == [
        "spend.key.tok",
        spend_key("user", "u@x"),
        "spend.team.t",
    ]
    assert {c for _, c in charges} == {Charge(seq=7, cost=0.25, request_id="r1", final=True)}
    assert charges_of(8, event("r2", "1", key_id=None)) == []
    assert charges_of(9, b"not json") == []


def test_settling_applies_each_event_once_and_drops_the_hold_at_the_end() -> None:
    record = SpendRecord(holds={"r1": Hold(amount=5.0, expires=10**12)})
    retried = Charge(seq=3, cost=0.0, request_id="r1", final=False)
    answered = Charge(seq=5, cost=1.5, request_id="r1", final=True)
    apply(record, [retried], now=0.0)
    assert record.holds and record.applied_seq == 3
    apply(record, [answered, retried], now=0.0)
    assert record.spent == 1.5 and not record.holds and record.applied_seq == 5
    apply(record, [retried, answered], now=0.0)  # a replay after a crash
    assert record.spent == 1.5
    apply(record, [Charge(seq=9, cost=0.5, request_id="r2", final=True)], now=0.0)
    assert record.spent == 2.0 and record.applied_seq == 9
