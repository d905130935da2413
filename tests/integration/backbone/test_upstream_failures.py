"""Upstream failures reach the client as the right status and error object,
before and after the first streamed byte."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from tests.stack import Stack

pytestmark = pytest.mark.integration

HELLO = [{"role": "user", "content": "Say hello"}]


def test_upstream_500_is_502(client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="sim-500", messages=HELLO)
    assert info.value.status_code == 502
    assert info.value.type == "upstream_error"


def test_upstream_429_keeps_retry_after(stack: Stack) -> None:
    resp = httpx.post(
        f"{stack.base_url}/v1/chat/completions", json={"model": "sim-429", "messages": HELLO}
    )
    assert resp.status_code == 429
    assert resp.headers["retry-after"] == "7"
    assert resp.json()["error"]["type"] == "rate_limit_error"


def test_stall_before_first_byte_is_504_and_upstream_is_closed(
    client: openai.OpenAI, stack: Stack
) -> None:
    before = stack.sim_stats()["disconnects"]
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="sim-stall", messages=HELLO)
    assert info.value.status_code == 504
    assert time.monotonic() - started < 10
    stack.sim_wait("disconnects", before + 1)


def test_stream_cut_midway_is_an_error_event_not_a_fake_stop(client: openai.OpenAI) -> None:
    received: list[str] = []

    def consume() -> None:
        for chunk in client.chat.completions.create(model="sim-cut", messages=HELLO, stream=True):
            assert not chunk.choices or chunk.choices[0].finish_reason is None
            received.append(chunk.choices[0].delta.content or "" if chunk.choices else "")

    with pytest.raises(openai.APIError) as info:
        consume()
    assert "".join(received).strip()
    assert "ended the stream" in info.value.message


def test_malformed_chunk_midway_is_an_error_event(client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIError) as info:
        list(client.chat.completions.create(model="sim-malformed", messages=HELLO, stream=True))
    assert "not JSON" in info.value.message


def test_client_disconnect_closes_the_upstream_call(stack: Stack) -> None:
    before = stack.sim_stats()["disconnects"]
    with httpx.stream(
        "POST",
        f"{stack.base_url}/v1/chat/completions",
        json={"model": "sim-slow", "messages": HELLO, "stream": True},
        timeout=30,
    ) as resp:
        assert resp.status_code == 200
        lines = resp.iter_lines()
        first = next(line for line in lines if line.startswith("data:"))
        assert "chat.completion.chunk" in first
    # leaving the block closes the connection after the first chunk
    stats = stack.sim_wait("disconnects", before + 1, timeout=10)
    assert stats["disconnects"] >= before + 1


def test_non_streaming_client_that_gives_up_closes_the_upstream_call(stack: Stack) -> None:
    before = stack.sim_stats()["disconnects"]
    impatient = openai.OpenAI(
        base_url=f"{stack.base_url}/v1", api_key="x", max_retries=0, timeout=1.0
    )
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        impatient.chat.completions.create(model="sim-slow-first", messages=HELLO)
    stack.sim_wait("disconnects", before + 1, timeout=10)
    # the upstream would have answered after 15 s; it was closed long before that
    assert time.monotonic() - started < 10
