"""The shipped price table: used when a deployment names no price, never over one."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from services.runtime.price_table import list_price
from services.runtime.settings import ModelDeployment


def deployment(**fields: Any) -> ModelDeployment:
    return ModelDeployment.model_validate(
        {"alias": "a", "provider": "openai", "base_url": "http://127.0.0.1:1/v1", **fields}
    )


@pytest.mark.parametrize(
    ("model", "family_input"),
    [
        ("gpt-4o-2024-08-06", "2.50"),
        ("gpt-4o-mini", "0.15"),  # the longest matching name wins over gpt-4o
        ("anthropic.claude-3-5-sonnet-20240620-v1:0", "3.00"),
        ("us.anthropic.claude-sonnet-4-20250514-v1:0", "3.00"),
        ("models/gemini-2.5-flash", "0.30"),
    ],
)
def test_dated_and_prefixed_names_find_their_family(model: str, family_input: str) -> None:
    found = list_price(model)
    assert found is not None and found[0] == Decimal(family_input)


def test_a_deployment_without_a_price_gets_the_list_price() -> None:
    priced = deployment(model="gpt-4o-mini-2024-07-18")
    assert priced.price.input_per_mtok == Decimal("0.15")
    assert priced.price.output_per_mtok == Decimal("0.60")
    assert priced.price.cached_input_per_mtok == Decimal("0.075")


def test_a_configured_price_always_wins() -> None:
    mine = deployment(model="gpt-4o", price={"input_per_mtok": "1", "output_per_mtok": "2"})
    assert mine.price.input_per_mtok == Decimal(1) and mine.price.output_per_mtok == Decimal(2)
    free = deployment(model="gpt-4o", price={})
    assert free.price.input_per_mtok == 0  # an explicit empty price means free


def test_an_unknown_model_costs_nothing() -> None:
    assert list_price("my-finetune") is None
    assert deployment(model="my-finetune").price.output_per_mtok == 0
