"""The simulator as a client sees it: a real uvicorn server driven by the openai SDK."""

from __future__ import annotations

import base64
import json
import struct
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest
import pytest_asyncio
from openai.types.chat import (
    ChatCompletionChunk,
    ChatCompletionMessageParam,
    ChatCompletionToolParam,
)

from services.simulator.engine import completion_text

from .conftest import Sim

pytestmark = pytest.mark.asyncio(loop_scope="session")

USER: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "one two three"}
]  # 3 words -> ceil(3*4/3) = 4 tokens
WEATHER_TOOL: ChatCompletionToolParam = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer"},
                "metric": {"type": "boolean"},
            },
            "required": ["city"],
        },
    },
}
OTHER_TOOL: ChatCompletionToolParam = {
    "type": "function",
    "function": {"name": "noop", "parameters": {"type": "object", "properties": {}}},
}


@pytest_asyncio.fixture(autouse=True, loop_scope="session")
async def _fresh_stats(sim: Sim) -> AsyncIterator[None]:
    sim.app.stats.reset()
    yield
    # Every exchange a test started must be over before the next test looks at counters.
    assert await sim.app.stats.wait_until(lambda s: s.active == 0, 5)


async def _collect(stream: openai.AsyncStream[ChatCompletionChunk]) -> list[ChatCompletionChunk]:
    return [chunk async for chunk in stream]


async def _drain(
    stream: openai.AsyncStream[ChatCompletionChunk], into: list[ChatCompletionChunk]
) -> None:
    async for chunk in stream:
        into.append(chunk)


def _text(chunks: list[ChatCompletionChunk]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


async def _wait(http: httpx.AsyncClient, counter: str, value: int) -> dict[str, Any]:
    response = await http.get(
        "/_sim/wait", params={"counter": counter, "value": value, "timeout": 5}
    )
    assert response.status_code == 200, response.text
    stats: dict[str, Any] = response.json()
    return stats


# -- happy paths ---------------------------------------------------------------------------------


async def test_non_stream_completion_and_usage(sim: Sim, client: openai.AsyncOpenAI) -> None:
    completion = await client.chat.completions.create(model="sim?tokens=5", messages=USER)

    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == "sim"
    assert completion.system_fingerprint
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == "lorem ipsum dolor sit amet "
    assert choice.message.refusal is None
    assert choice.finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 4
    assert completion.usage.completion_tokens == 5
    assert completion.usage.total_tokens == 9
    assert completion.usage.prompt_tokens_details is not None
    assert completion.usage.completion_tokens_details is not None

    stats = sim.app.stats
    assert stats.last_request == {"model": "sim?tokens=5", "messages": USER}
    assert stats.last_headers["authorization"] == "Bearer x"
    assert (stats.requests, stats.completed, stats.disconnects) == (1, 1, 0)


async def test_stream_without_usage(client: openai.AsyncOpenAI, http: httpx.AsyncClient) -> None:
    stream = await client.chat.completions.create(
        model="sim?tokens=7",
        messages=USER,
        stream=True,
    )
    chunks = await _collect(stream)

    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert _text(chunks) == completion_text(7)
    assert [c.choices[0].finish_reason for c in chunks].count("stop") == 1
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert len({c.id for c in chunks}) == 1

    # On the wire: no "usage" key at all when it was not asked for, and the [DONE] sentinel.
    raw = await http.post(
        "/v1/chat/completions", json={"model": "sim?tokens=2", "messages": USER, "stream": True}
    )
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert "usage" not in raw.text
    assert raw.text.endswith("data: [DONE]\n\n")


async def test_stream_with_usage(client: openai.AsyncOpenAI, http: httpx.AsyncClient) -> None:
    stream = await client.chat.completions.create(
        model="sim?tokens=6",
        messages=USER,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = await _collect(stream)

    usage_chunk = chunks[-1]
    assert usage_chunk.choices == []
    assert usage_chunk.usage is not None
    assert usage_chunk.usage.prompt_tokens == 4
    assert usage_chunk.usage.completion_tokens == 6
    assert usage_chunk.usage.total_tokens == 10
    assert all(c.usage is None for c in chunks[:-1])
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert _text(chunks) == completion_text(6)

    raw = await http.post(
        "/v1/chat/completions",
        json={
            "model": "sim?tokens=1",
            "messages": USER,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    )
    events = [line[6:] for line in raw.text.split("\n\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    payloads = [json.loads(e) for e in events[:-1]]
    assert all("usage" in p and p["usage"] is None for p in payloads[:-1])
    assert payloads[-1]["choices"] == []


async def test_max_tokens_caps_output(client: openai.AsyncOpenAI) -> None:
    completion = await client.chat.completions.create(
        model="sim?tokens=10",
        messages=USER,
        max_tokens=3,
    )
    assert completion.choices[0].finish_reason == "length"
    assert completion.choices[0].message.content == completion_text(3)
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 3

    stream = await client.chat.completions.create(
        model="sim?tokens=10",
        messages=USER,
        max_completion_tokens=4,
        stream=True,
    )
    chunks = await _collect(stream)
    assert _text(chunks) == completion_text(4)
    assert chunks[-1].choices[0].finish_reason == "length"


async def test_header_overrides_model_behaviour(client: openai.AsyncOpenAI) -> None:
    completion = await client.chat.completions.create(
        model="my-model?tokens=5",
        messages=USER,
        extra_headers={"X-Sim-Behavior": "tokens=2"},
    )
    assert completion.model == "my-model"
    assert completion.choices[0].message.content == completion_text(2)


async def test_models_list(client: openai.AsyncOpenAI) -> None:
    models = [m.id async for m in client.models.list()]
    assert models == ["sim"]


# -- tools ---------------------------------------------------------------------------------------


async def test_tool_call_non_stream(client: openai.AsyncOpenAI) -> None:
    completion = await client.chat.completions.create(
        model="sim",
        messages=USER,
        tools=[OTHER_TOOL, WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert choice.message.tool_calls is not None
    (call,) = choice.message.tool_calls
    assert call.type == "function"
    assert call.id.startswith("call_")
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "x", "days": 1, "metric": True}


async def test_tool_call_forced_by_behaviour_uses_first_function(
    client: openai.AsyncOpenAI,
) -> None:
    completion = await client.chat.completions.create(
        model="sim?tool_call=1",
        messages=USER,
        tools=[OTHER_TOOL, WEATHER_TOOL],
    )
    tool_calls = completion.choices[0].message.tool_calls
    assert tool_calls is not None
    assert tool_calls[0].type == "function"
    assert tool_calls[0].function.name == "noop"
    assert json.loads(tool_calls[0].function.arguments) == {}


async def test_tool_call_streamed(client: openai.AsyncOpenAI) -> None:
    async with client.chat.completions.stream(
        model="sim",
        messages=USER,
        tools=[WEATHER_TOOL],
        tool_choice="required",
    ) as stream:
        fragments = [
            event.arguments_delta
            async for event in stream
            if event.type == "tool_calls.function.arguments.delta" and event.arguments_delta
        ]
        final = await stream.get_final_completion()

    assert len(fragments) in (2, 3)
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    (call,) = choice.message.tool_calls
    assert call.type == "function"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "x", "days": 1, "metric": True}


# -- HTTP error faults ---------------------------------------------------------------------------


async def test_429_is_a_rate_limit_error_with_retry_after(
    sim: Sim, client: openai.AsyncOpenAI
) -> None:
    with pytest.raises(openai.RateLimitError) as caught:
        await client.chat.completions.create(model="sim?fault=429&retry_after=2", messages=USER)
    error = caught.value
    assert error.status_code == 429
    assert error.response.headers["retry-after"] == "2"
    assert error.code == "rate_limit_exceeded"
    assert error.type == "requests"
    assert sim.app.stats.faults == {"429": 1}


@pytest.mark.parametrize(
    ("fault", "exc_type", "error_type", "code"),
    [
        ("500", openai.InternalServerError, "server_error", None),
        ("503", openai.InternalServerError, "service_unavailable_error", "server_is_overloaded"),
        ("400", openai.BadRequestError, "invalid_request_error", None),
        ("401", openai.AuthenticationError, "invalid_request_error", "invalid_api_key"),
    ],
)
async def test_http_error_faults(
    client: openai.AsyncOpenAI,
    fault: str,
    exc_type: type[openai.APIStatusError],
    error_type: str,
    code: str | None,
) -> None:
    with pytest.raises(exc_type) as caught:
        await client.chat.completions.create(
            model="sim",
            messages=USER,
            stream=True,
            extra_headers={"X-Sim-Behavior": f"fault={fault}"},
        )
    assert caught.value.status_code == int(fault)
    assert caught.value.type == error_type
    assert caught.value.code == code


# -- broken responses ----------------------------------------------------------------------------


async def test_cut_stream_ends_without_finish_reason(
    sim: Sim, client: openai.AsyncOpenAI, http: httpx.AsyncClient
) -> None:
    stream = await client.chat.completions.create(
        model="sim?tokens=10&fault=cut&fault_after=3",
        messages=USER,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = await _collect(stream)
    assert _text(chunks) == completion_text(3)
    assert all(c.choices and c.choices[0].finish_reason is None for c in chunks)
    assert all(c.usage is None for c in chunks)

    raw = await http.post(
        "/v1/chat/completions",
        json={"model": "sim?fault=cut", "messages": USER, "stream": True},
    )
    assert raw.status_code == 200
    assert "[DONE]" not in raw.text
    assert sim.app.stats.faults == {"cut": 2}


async def test_cut_non_stream_is_truncated_json(http: httpx.AsyncClient) -> None:
    raw = await http.post("/v1/chat/completions", json={"model": "sim?fault=cut", "messages": USER})
    assert raw.status_code == 200
    assert raw.text.startswith('{"id":"chatcmpl-')
    with pytest.raises(json.JSONDecodeError):
        json.loads(raw.text)


async def test_malformed_stream_breaks_sdk_parsing(
    sim: Sim, client: openai.AsyncOpenAI, http: httpx.AsyncClient
) -> None:
    stream = await client.chat.completions.create(
        model="sim?tokens=5&fault=malformed&fault_after=1",
        messages=USER,
        stream=True,
    )
    seen: list[ChatCompletionChunk] = []
    with pytest.raises(json.JSONDecodeError):
        await _drain(stream, seen)
    assert _text(seen) == completion_text(1)

    # The bad line is followed by a normal continuation.
    raw = await http.post(
        "/v1/chat/completions",
        json={
            "model": "sim?tokens=3&fault=malformed&fault_after=1",
            "messages": USER,
            "stream": True,
        },
    )
    lines = [line for line in raw.text.split("\n\n") if line]
    assert lines[2] == "data: {not json"
    assert lines[-1] == "data: [DONE]"
    assert sim.app.stats.faults == {"malformed": 2}


async def test_malformed_non_stream_breaks_sdk_parsing(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(json.JSONDecodeError):
        await client.chat.completions.create(model="sim?fault=malformed", messages=USER)


async def test_reset_drops_the_connection(sim: Sim, client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.APIConnectionError):
        await client.chat.completions.create(model="sim?fault=reset", messages=USER)

    stream = await client.chat.completions.create(
        model="sim?tokens=10&fault=reset&fault_after=2",
        messages=USER,
        stream=True,
    )
    seen: list[ChatCompletionChunk] = []
    with pytest.raises(openai.APIConnectionError) as caught:
        await _drain(stream, seen)
    assert isinstance(caught.value.__cause__, Exception)  # the transport's read error
    assert _text(seen) == completion_text(2)
    assert sim.app.stats.faults == {"reset": 2}


# -- timing and disconnects ----------------------------------------------------------------------


async def test_ttft_delays_first_chunk(client: openai.AsyncOpenAI) -> None:
    start = time.perf_counter()
    stream = await client.chat.completions.create(
        model="sim?ttft_ms=150&tokens=2",
        messages=USER,
        stream=True,
    )
    async for _ in stream:
        first_chunk_after = time.perf_counter() - start
        break
    await stream.close()
    assert first_chunk_after >= 0.15

    start = time.perf_counter()
    await client.chat.completions.create(model="sim?ttft_ms=100&tokens=2", messages=USER)
    assert time.perf_counter() - start >= 0.1


async def test_itl_spaces_tokens(client: openai.AsyncOpenAI) -> None:
    start = time.perf_counter()
    stream = await client.chat.completions.create(
        model="sim?itl_ms=20&tokens=6",
        messages=USER,
        stream=True,
    )
    chunks = await _collect(stream)
    assert _text(chunks) == completion_text(6)
    assert time.perf_counter() - start >= 5 * 0.02


async def test_disconnect_during_slow_stream_is_counted(
    client: openai.AsyncOpenAI, http: httpx.AsyncClient
) -> None:
    stream = await client.chat.completions.create(
        model="sim?itl_ms=50&tokens=100",
        messages=USER,
        stream=True,
    )
    received = 0
    async for _ in stream:
        received += 1
        if received == 2:
            break
    await stream.close()

    stats = await _wait(http, "disconnects", 1)
    assert stats["disconnects"] == 1
    assert stats["completed"] == 0


async def test_disconnect_during_ttft_is_counted(
    client: openai.AsyncOpenAI, http: httpx.AsyncClient
) -> None:
    with pytest.raises(openai.APITimeoutError):
        await client.with_options(timeout=0.2).chat.completions.create(
            model="sim?ttft_ms=5000",
            messages=USER,
        )
    stats = await _wait(http, "disconnects", 1)
    assert stats["disconnects"] == 1


async def test_stall_until_client_timeout_counts_a_disconnect(
    client: openai.AsyncOpenAI, http: httpx.AsyncClient
) -> None:
    with pytest.raises(openai.APITimeoutError):
        await client.with_options(timeout=0.2).chat.completions.create(
            model="sim?fault=stall",
            messages=USER,
        )
    stats = await _wait(http, "disconnects", 1)
    assert stats["faults"] == {"stall": 1}


async def test_stall_mid_stream_then_client_gives_up(
    client: openai.AsyncOpenAI, http: httpx.AsyncClient
) -> None:
    stream = await client.with_options(timeout=0.3).chat.completions.create(
        model="sim?tokens=10&fault=stall&fault_after=2",
        messages=USER,
        stream=True,
    )
    seen: list[ChatCompletionChunk] = []
    with pytest.raises(openai.APITimeoutError):
        await _drain(stream, seen)
    assert _text(seen) == completion_text(2)
    await _wait(http, "disconnects", 1)


async def test_stall_ms_elapses_then_answers(client: openai.AsyncOpenAI) -> None:
    start = time.perf_counter()
    completion = await client.chat.completions.create(
        model="sim?fault=stall&stall_ms=100&tokens=2",
        messages=USER,
    )
    assert time.perf_counter() - start >= 0.1
    assert completion.choices[0].message.content == completion_text(2)


# -- invalid requests ----------------------------------------------------------------------------


async def test_bad_behaviour_key_is_a_400_naming_the_key(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(model="sim?tokens=3&bogus=1", messages=USER)
    assert "bogus" in caught.value.message
    assert caught.value.param == "bogus"

    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(
            model="sim",
            messages=USER,
            extra_headers={"X-Sim-Behavior": "ttft_ms=soon"},
        )
    assert "ttft_ms" in caught.value.message


@pytest.mark.parametrize(
    ("content", "param"),
    [
        (b"{not json", None),
        (b"[1, 2]", None),
        (b'{"messages": [{"role": "user", "content": "hi"}]}', "model"),
        (b'{"model": "sim"}', "messages"),
        (b'{"model": "sim", "messages": []}', "messages"),
        (b'{"model": "sim", "messages": "hi"}', "messages"),
    ],
)
async def test_invalid_requests_are_openai_400s(
    http: httpx.AsyncClient, content: bytes, param: str | None
) -> None:
    response = await http.post(
        "/v1/chat/completions", content=content, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param


async def test_unknown_route_is_an_openai_404(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        await client.images.generate(model="sim", prompt="hi")


async def test_embeddings_in_float_and_base64(
    client: openai.AsyncOpenAI, http: httpx.AsyncClient
) -> None:
    floats = await client.embeddings.create(
        model="sim", input=["hello", "world"], encoding_format="float", dimensions=8
    )
    assert [d.index for d in floats.data] == [0, 1]
    assert len(floats.data[0].embedding) == 8
    assert floats.usage.prompt_tokens == 4
    packed = await http.post(
        "/v1/embeddings",
        json={"model": "sim", "input": "world", "encoding_format": "base64", "dimensions": 8},
    )
    raw = base64.b64decode(packed.json()["data"][0]["embedding"])
    decoded = struct.unpack("<8f", raw)
    assert [round(v, 4) for v in decoded] == [round(v, 4) for v in floats.data[1].embedding]


# -- control endpoints ---------------------------------------------------------------------------


async def test_stats_wait_and_reset_endpoints(sim: Sim, http: httpx.AsyncClient) -> None:
    timed_out = await http.get(
        "/_sim/wait", params={"counter": "completed", "value": 1, "timeout": 0.05}
    )
    assert timed_out.status_code == 408
    assert timed_out.json()["completed"] == 0

    await http.post("/v1/chat/completions", json={"model": "sim", "messages": USER})
    stats = (await http.get("/_sim/stats")).json()
    assert stats["requests"] == 1
    assert stats["completed"] == 1
    assert stats["last_request"]["model"] == "sim"

    assert (await http.get("/_sim/wait", params={"counter": "nope"})).status_code == 400

    reset = await http.post("/_sim/reset")
    assert reset.status_code == 200
    assert reset.json()["requests"] == 0
    assert sim.app.stats.completed == 0
