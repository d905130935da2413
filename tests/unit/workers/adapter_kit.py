"""Helpers the provider adapter tests share: one upstream call, and a stream read whole."""

from __future__ import annotations

from typing import Any

from services.runtime.settings import ModelDeployment
from services.workers.protocol import ProviderAdapter, StreamEvent, UpstreamCall

USER: list[Any] = [{"role": "user", "content": "one two three"}]  # 4 prompt tokens


def call(
    dep: ModelDeployment, model: str = "sim", stream: bool = False, **body: Any
) -> UpstreamCall:
    body.setdefault("messages", USER)
    return UpstreamCall(dep, {"model": model, **body}, stream=stream, timeout_s=10)


async def collect(adapter: ProviderAdapter, upstream: UpstreamCall) -> list[StreamEvent]:
    return [event async for event in adapter.stream(upstream)]
