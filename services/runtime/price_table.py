"""Default prices for common upstream models, in USD per million tokens.

A deployment that sets no ``price`` in config gets the entry here whose name is
the longest prefix of its upstream model name (after a provider prefix such
as ``anthropic.`` or ``models/``), so dated versions like
``gpt-4o-2024-08-06`` or ``claude-3-5-sonnet-20241022`` match their family.
A ``price`` in config always wins; a model matched by nothing costs 0 and the
configuration check says so. These are list prices at the time of writing:
check them against your contract.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Final, NamedTuple


class ListPrice(NamedTuple):
    input: str
    output: str
    cached_input: str | None = None


PRICES: Final[dict[str, ListPrice]] = {
    # OpenAI
    "gpt-4o-mini": ListPrice("0.15", "0.60", "0.075"),
    "gpt-4o": ListPrice("2.50", "10.00", "1.25"),
    "gpt-4.1-nano": ListPrice("0.10", "0.40", "0.025"),
    "gpt-4.1-mini": ListPrice("0.40", "1.60", "0.10"),
    "gpt-4.1": ListPrice("2.00", "8.00", "0.50"),
    "gpt-4-turbo": ListPrice("10.00", "30.00"),
    "gpt-3.5-turbo": ListPrice("0.50", "1.50"),
    "o4-mini": ListPrice("1.10", "4.40", "0.275"),
    "o3-mini": ListPrice("1.10", "4.40", "0.55"),
    "o3": ListPrice("2.00", "8.00", "0.50"),
    "o1": ListPrice("15.00", "60.00", "7.50"),
    "text-embedding-3-small": ListPrice("0.02", "0"),
    "text-embedding-3-large": ListPrice("0.13", "0"),
    # Anthropic
    "claude-3-haiku": ListPrice("0.25", "1.25", "0.03"),
    "claude-3-5-haiku": ListPrice("0.80", "4.00", "0.08"),
    "claude-haiku-4-5": ListPrice("1.00", "5.00", "0.10"),
    "claude-3-5-sonnet": ListPrice("3.00", "15.00", "0.30"),
    "claude-3-7-sonnet": ListPrice("3.00", "15.00", "0.30"),
    "claude-sonnet-4": ListPrice("3.00", "15.00", "0.30"),
    "claude-3-opus": ListPrice("15.00", "75.00", "1.50"),
    "claude-opus-4": ListPrice("15.00", "75.00", "1.50"),
    # Google
    "gemini-1.5-flash": ListPrice("0.075", "0.30"),
    "gemini-1.5-pro": ListPrice("1.25", "5.00"),
    "gemini-2.0-flash": ListPrice("0.10", "0.40", "0.025"),
    "gemini-2.5-flash": ListPrice("0.30", "2.50", "0.075"),
    "gemini-2.5-pro": ListPrice("1.25", "10.00", "0.31"),
    "text-embedding-004": ListPrice("0", "0"),
    # Amazon
    "amazon.titan-embed-text-v2": ListPrice("0.02", "0"),
    "amazon.nova-micro": ListPrice("0.035", "0.14"),
    "amazon.nova-lite": ListPrice("0.06", "0.24"),
    "amazon.nova-pro": ListPrice("0.80", "3.20"),
    # Mistral and Meta, as hosted by their vendors
    "mistral-large": ListPrice("2.00", "6.00"),
    "mistral-small": ListPrice("0.10", "0.30"),
    "llama3-70b": ListPrice("0.59", "0.79"),
}

_PROVIDER_PREFIXES: Final = ("models/", "anthropic.", "meta.", "mistral.", "us.", "eu.")


def list_price(model: str) -> tuple[Decimal, Decimal, Decimal | None] | None:
    """Input, output and cached-input prices for ``model``, or None if unknown."""
    name = model.strip().lower()
    changed = True
    while changed:
        changed = False
        for prefix in _PROVIDER_PREFIXES:
            if name.startswith(prefix) and len(name) > len(prefix):
                name, changed = name[len(prefix) :], True
    best = max((key for key in PRICES if name.startswith(key)), key=len, default=None)
    if best is None:
        return None
    price = PRICES[best]
    cached = Decimal(price.cached_input) if price.cached_input is not None else None
    return Decimal(price.input), Decimal(price.output), cached
