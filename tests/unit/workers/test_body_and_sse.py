from __future__ import annotations

from collections.abc import AsyncIterator

from services.workers.body import upstream_body
from services.workers.sse import SSEMessage, read_events


def test_connection_fields_are_removed_everywhere() -> None:
    body = {
        "model": "alias",
        "api_base": "http://evil",
        "base_url": "http://evil",
        "api_key": "sk-x",
        "extra_headers": {"x": "y"},
        "temperature": 0.2,
        "messages": [{"role": "user", "content": "hi", "api_key": "sk-y"}],
        "stream": False,
    }
    out = upstream_body(body, "upstream-1", stream=False)
    assert out == {
        "model": "upstream-1",
        "temperature": 0.2,
        "messages": [{"role": "user", "content": "hi"}],
    }
    assert body["model"] == "alias"  # the input is not changed


def test_stream_flag_follows_the_call() -> None:
    body = {"model": "a", "messages": [], "stream_options": {"include_usage": True}}
    assert upstream_body(body, "u", stream=True)["stream"] is True
    assert "stream_options" not in upstream_body(body, "u", stream=False)


async def lines(*items: str) -> AsyncIterator[str]:
    for item in items:
        yield item


async def test_sse_reader_groups_fields() -> None:
    got = [
        m
        async for m in read_events(
            lines(
                ": comment", "event: ping", "data: {}", "", "data: a", "data: b", "", "data: [DONE]"
            )
        )
    ]
    assert got == [SSEMessage("ping", "{}"), SSEMessage(None, "a\nb"), SSEMessage(None, "[DONE]")]
