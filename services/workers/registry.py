"""Provider name to adapter class. Adapters register themselves on import."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from services.workers.http import UpstreamHTTP
from services.workers.protocol import ProviderAdapter

AdapterType = TypeVar("AdapterType", bound=type[ProviderAdapter])

_ADAPTERS: dict[str, Callable[[UpstreamHTTP], ProviderAdapter]] = {}


def register(cls: AdapterType) -> AdapterType:
    if cls.name in _ADAPTERS:
        raise ValueError(f"adapter {cls.name!r} registered twice")
    _ADAPTERS[cls.name] = cls
    return cls


def create(provider: str, http: UpstreamHTTP) -> ProviderAdapter:
    _load_builtin()
    try:
        factory = _ADAPTERS[provider]
    except KeyError:
        known = ", ".join(sorted(_ADAPTERS))
        raise LookupError(f"no adapter for provider {provider!r}; known: {known}") from None
    return factory(http)


def names() -> list[str]:
    _load_builtin()
    return sorted(_ADAPTERS)


def _load_builtin() -> None:
    from services.workers import adapters  # noqa: F401  (registers the built-in adapters)
