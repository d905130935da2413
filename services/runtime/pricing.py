"""Cost of an attempt from a deployment's prices, in exact decimal dollars."""

from __future__ import annotations

from decimal import Decimal

from services.runtime.settings import Price

_MILLION = Decimal(1_000_000)


def cost_usd(
    price: Price, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0
) -> Decimal:
    cached = min(max(cached_tokens, 0), max(prompt_tokens, 0))
    cached_rate = price.cached_input_per_mtok
    if cached_rate is None:
        cached_rate = price.input_per_mtok
    total = (
        Decimal(prompt_tokens - cached) * price.input_per_mtok
        + Decimal(cached) * cached_rate
        + Decimal(completion_tokens) * price.output_per_mtok
    )
    return total / _MILLION
