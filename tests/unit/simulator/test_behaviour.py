"""Parsing of the behaviour grammar (model query and X-Sim-Behavior header)."""

from __future__ import annotations

import pytest

from services.simulator.behaviour import Behaviour, BehaviourError, parse_behaviour


def test_plain_model_gets_defaults() -> None:
    assert parse_behaviour("sim", None) == Behaviour(model="sim")
    assert parse_behaviour("gpt-4o-mini", None).model == "gpt-4o-mini"
    assert parse_behaviour("?tokens=3", None) == Behaviour(model="sim", tokens=3)


def test_all_keys() -> None:
    behaviour = parse_behaviour(
        "m?ttft_ms=50&itl_ms=2.5&tokens=100&fault=cut&fault_after=3&retry_after=0.5"
        "&stall_ms=10&tool_call=true",
        None,
    )
    assert behaviour == Behaviour(
        model="m",
        ttft_ms=50.0,
        itl_ms=2.5,
        tokens=100,
        fault="cut",
        fault_after=3,
        retry_after=0.5,
        stall_ms=10.0,
        tool_call=True,
    )


def test_header_overrides_model_per_key() -> None:
    behaviour = parse_behaviour("sim?ttft_ms=50&tokens=100", "tokens=5&fault=429")
    assert (behaviour.ttft_ms, behaviour.tokens, behaviour.fault) == (50.0, 5, "429")


def test_empty_pairs_are_ignored_and_last_wins() -> None:
    assert parse_behaviour("sim?tokens=1&&tokens=2&", "") == Behaviour(tokens=2)


def test_stream_fault_after_default() -> None:
    assert parse_behaviour("sim?fault=cut", None).stream_fault_after == 2
    assert parse_behaviour("sim?fault=cut&fault_after=0", None).stream_fault_after == 0


@pytest.mark.parametrize(
    ("model", "header", "key"),
    [
        ("sim?bogus=1", None, "bogus"),
        ("sim", "speed=fast", "speed"),
        ("sim?tokens", None, "tokens"),
        ("sim?tokens=-1", None, "tokens"),
        ("sim?tokens=1.5", None, "tokens"),
        ("sim?ttft_ms=soon", None, "ttft_ms"),
        ("sim?itl_ms=nan", None, "itl_ms"),
        ("sim?stall_ms=-3", None, "stall_ms"),
        ("sim?fault=teapot", None, "fault"),
        ("sim?tool_call=maybe", None, "tool_call"),
    ],
)
def test_bad_keys_and_values_name_the_key(model: str, header: str | None, key: str) -> None:
    with pytest.raises(BehaviourError) as caught:
        parse_behaviour(model, header)
    assert caught.value.key == key
    assert key in str(caught.value)
