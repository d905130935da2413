"""The simulator's Anthropic Messages dialect, driven by the official anthropic SDK."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import httpx
import pytest
import pytest_asyncio
from anthropic.types import MessageParam, TextBlock, ToolParam, ToolUseBlock

from services.simulator.dialect import Call, Route, SimError
from services.simulator.dialects.anthropic import AnthropicDialect
from services.simulator.engine import completion_text

from .conftest import Sim

USER: list[MessageParam] = [{"role": "user", "content": "one two three"}]  # 4 prompt tokens
WEATHER: ToolParam = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city"],
    },
}
NOOP: ToolParam = {"name": "noop", "input_schema": {"type": "object", "properties": {}}}
HEADERS = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
PNG = "iVBORw0KGgo="


@pytest_asyncio.fixture(loop_scope="session")
async def claude(sim: Sim) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(
        base_url=sim.url, api_key="x", max_retries=0, _strict_response_validation=True
    ) as client:
        yield client


@pytest_asyncio.fixture(autouse=True, loop_scope="session")
async def _settled(sim: Sim) -> AsyncIterator[None]:
    sim.app.stats.reset()
    yield
    assert await sim.app.stats.wait_until(lambda s: s.active == 0, 5)


def _events(text: str) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for frame in text.split("\n\n"):
        if not frame:
            continue
        event, data = frame.split("\n")
        out.append((event.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return out


# -- answers -------------------------------------------------------------------------------------


async def test_message_text_and_usage(sim: Sim, claude: anthropic.AsyncAnthropic) -> None:
    message = await claude.messages.create(model="sim?tokens=5", max_tokens=100, messages=USER)

    assert message.id.startswith("msg_")
    assert message.type == "message"
    assert message.role == "assistant"
    assert message.model == "sim"
    assert isinstance(message.content[0], TextBlock)
    assert message.content[0].text == completion_text(5)
    assert message.stop_reason == "end_turn"
    assert message.stop_sequence is None
    assert message.usage.input_tokens == 4
    assert message.usage.output_tokens == 5
    assert message.usage.cache_read_input_tokens == 0
    assert message.usage.cache_creation_input_tokens == 0
    sent = sim.app.stats.last_headers
    assert sent.get("x-api-key") == "x" or sent.get("authorization") == "Bearer x"
    assert sim.app.stats.last_headers["anthropic-version"]


async def test_cached_tokens_are_cache_reads(claude: anthropic.AsyncAnthropic) -> None:
    message = await claude.messages.create(
        model="sim?tokens=1&cached_tokens=3", max_tokens=10, messages=USER
    )
    assert message.usage.cache_read_input_tokens == 3
    assert message.usage.input_tokens == 1  # 4 prompt tokens, 3 of them from the cache


async def test_stream_text(claude: anthropic.AsyncAnthropic) -> None:
    async with claude.messages.stream(
        model="sim?tokens=6", max_tokens=100, messages=USER
    ) as stream:
        text = "".join([piece async for piece in stream.text_stream])
        final = await stream.get_final_message()

    assert text == completion_text(6)
    assert final.stop_reason == "end_turn"
    assert final.usage.input_tokens == 4
    assert final.usage.output_tokens == 6


async def test_stream_event_sequence_on_the_wire(http: httpx.AsyncClient) -> None:
    body = {"model": "sim?tokens=2", "max_tokens": 10, "messages": USER, "stream": True}
    raw = await http.post("/v1/messages", json=body, headers=HEADERS)

    assert raw.headers["content-type"].startswith("text/event-stream")
    events = _events(raw.text)
    assert [name for name, _ in events] == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(name == data["type"] for name, data in events)
    start = events[0][1]["message"]
    assert start["stop_reason"] is None
    assert start["content"] == []
    assert start["usage"]["input_tokens"] == 4
    assert events[3][1]["delta"] == {"type": "text_delta", "text": "lorem "}
    assert events[6][1]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert events[6][1]["usage"] == {"output_tokens": 2}


async def test_raw_stream_events_with_create(claude: anthropic.AsyncAnthropic) -> None:
    stream = await claude.messages.create(
        model="sim?tokens=3", max_tokens=100, messages=USER, stream=True
    )
    types = [event.type async for event in stream]
    assert types[0] == "message_start"
    assert types[-2:] == ["message_delta", "message_stop"]
    assert types.count("content_block_delta") == 3


async def test_tool_call(claude: anthropic.AsyncAnthropic) -> None:
    message = await claude.messages.create(
        model="sim", max_tokens=100, messages=USER, tools=[WEATHER], tool_choice={"type": "any"}
    )
    assert message.stop_reason == "tool_use"
    block = message.content[0]
    assert isinstance(block, ToolUseBlock)
    assert block.id.startswith("toolu_")
    assert block.name == "get_weather"
    assert block.input == {"city": "x", "days": 1}

    named = await claude.messages.create(
        model="sim",
        max_tokens=100,
        messages=USER,
        tools=[WEATHER, NOOP],
        tool_choice={"type": "tool", "name": "noop"},
    )
    assert isinstance(named.content[0], ToolUseBlock)
    assert named.content[0].name == "noop"

    none = await claude.messages.create(
        model="sim?tool_call=1&tokens=1",
        max_tokens=100,
        messages=USER,
        tools=[WEATHER],
        tool_choice={"type": "none"},
    )
    assert none.stop_reason == "end_turn"


async def test_tool_call_stream(claude: anthropic.AsyncAnthropic) -> None:
    async with claude.messages.stream(
        model="sim?tool_call=1", max_tokens=100, messages=USER, tools=[WEATHER]
    ) as stream:
        partials = [e.partial_json async for e in stream if e.type == "input_json"]
        final = await stream.get_final_message()

    assert final.stop_reason == "tool_use"
    block = final.content[0]
    assert isinstance(block, ToolUseBlock)
    assert block.input == {"city": "x", "days": 1}
    assert json.loads("".join(partials)) == {"city": "x", "days": 1}
    assert len([p for p in partials if p]) >= 2


async def test_echo_shows_the_conversation(claude: anthropic.AsyncAnthropic) -> None:
    messages: list[MessageParam] = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is this"},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                },
                {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}},
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "let me see"},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_1",
                    "content": [{"type": "text", "text": "sunny"}],
                },
                {"type": "text", "text": "thanks"},
            ],
        },
    ]
    message = await claude.messages.create(
        model="sim?echo=1",
        max_tokens=200,
        system=[{"type": "text", "text": "be brief"}],
        messages=messages,
        tools=[WEATHER],
    )
    assert isinstance(message.content[0], TextBlock)
    assert message.content[0].text == (
        "system:be brief | user:what is this | image:image/png | image:url | "
        'assistant:let me see | call:get_weather({"city":"Paris"}) | result:sunny | user:thanks'
    )


async def test_stop_sequence(claude: anthropic.AsyncAnthropic) -> None:
    message = await claude.messages.create(
        model="sim?tokens=10", max_tokens=100, messages=USER, stop_sequences=["dolor"]
    )
    assert message.stop_reason == "stop_sequence"
    assert message.stop_sequence == "dolor"
    assert isinstance(message.content[0], TextBlock)
    assert message.content[0].text == "lorem ipsum "


async def test_max_tokens_gives_max_tokens_stop(claude: anthropic.AsyncAnthropic) -> None:
    message = await claude.messages.create(model="sim?tokens=10", max_tokens=3, messages=USER)
    assert message.stop_reason == "max_tokens"
    assert isinstance(message.content[0], TextBlock)
    assert message.content[0].text == completion_text(3)
    assert message.usage.output_tokens == 3

    async with claude.messages.stream(model="sim?tokens=10", max_tokens=4, messages=USER) as stream:
        final = await stream.get_final_message()
    assert final.stop_reason == "max_tokens"
    assert final.usage.output_tokens == 4


# -- errors --------------------------------------------------------------------------------------

FAULTS: list[tuple[str, int, str, type[anthropic.APIStatusError]]] = [
    ("400", 400, "invalid_request_error", anthropic.BadRequestError),
    ("401", 401, "authentication_error", anthropic.AuthenticationError),
    ("403", 403, "permission_error", anthropic.PermissionDeniedError),
    ("404", 404, "not_found_error", anthropic.NotFoundError),
    ("413", 413, "request_too_large", anthropic.APIStatusError),
    ("429", 429, "rate_limit_error", anthropic.RateLimitError),
    ("500", 500, "api_error", anthropic.InternalServerError),
    ("503", 529, "overloaded_error", anthropic.InternalServerError),
    ("529", 529, "overloaded_error", anthropic.InternalServerError),
]


@pytest.mark.parametrize(("fault", "status", "kind", "exc_type"), FAULTS)
async def test_error_faults(
    claude: anthropic.AsyncAnthropic,
    fault: str,
    status: int,
    kind: str,
    exc_type: type[anthropic.APIStatusError],
) -> None:
    with pytest.raises(exc_type) as caught:
        await claude.messages.create(model=f"sim?fault={fault}", max_tokens=10, messages=USER)
    error = caught.value
    assert error.status_code == status
    assert isinstance(error.body, dict)
    assert error.body["type"] == "error"
    assert error.body["error"]["type"] == kind
    assert error.body["error"]["message"]
    assert error.body["request_id"].startswith("req_")
    assert error.response.headers["request-id"] == error.body["request_id"]
    if fault == "429":
        assert error.response.headers["retry-after"] == "1"


async def test_malformed_stream_frame(http: httpx.AsyncClient) -> None:
    body = {"model": "sim?fault=malformed", "max_tokens": 10, "messages": USER, "stream": True}
    raw = await http.post("/v1/messages", json=body, headers=HEADERS)
    assert "event: content_block_delta\ndata: {not json\n\n" in raw.text
    events = [f.split("\n")[0] for f in raw.text.split("\n\n") if f]
    assert events[0] == "event: message_start"  # the broken frame comes mid-stream


# -- validation ----------------------------------------------------------------------------------

INVALID: list[tuple[dict[str, str], dict[str, Any], int, str, str]] = [
    ({"anthropic-version": "2023-06-01"}, {}, 401, "authentication_error", "x-api-key"),
    ({"x-api-key": "k"}, {}, 400, "invalid_request_error", "anthropic-version"),
    (HEADERS, {"max_tokens": None}, 400, "invalid_request_error", "max_tokens: Field required"),
    (HEADERS, {"max_tokens": 0}, 400, "invalid_request_error", "max_tokens"),
    (HEADERS, {"model": None}, 400, "invalid_request_error", "model: Field required"),
    (HEADERS, {"messages": []}, 400, "invalid_request_error", "at least one message"),
    (
        HEADERS,
        {"messages": [{"role": "system", "content": "x"}]},
        400,
        "invalid_request_error",
        "messages.0.role",
    ),
    (
        HEADERS,
        {"messages": [{"role": "user", "content": [{"type": "text", "text": ""}]}]},
        400,
        "invalid_request_error",
        "non-empty",
    ),
    (
        HEADERS,
        {
            "messages": [
                {"role": "user", "content": "hi"},
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}],
                },
                {"role": "user", "content": "no result"},
            ]
        },
        400,
        "invalid_request_error",
        "`tool_use` ids were found without `tool_result` blocks",
    ),
    (
        HEADERS,
        {"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t"}]}]},
        400,
        "invalid_request_error",
        "unexpected `tool_use_id`",
    ),
]


@pytest.mark.parametrize(("headers", "change", "status", "kind", "needle"), INVALID)
async def test_requests_the_api_would_refuse(
    http: httpx.AsyncClient,
    headers: dict[str, str],
    change: dict[str, Any],
    status: int,
    kind: str,
    needle: str,
) -> None:
    body: dict[str, Any] = {"model": "sim", "max_tokens": 10, "messages": USER}
    body.update(change)
    body = {k: v for k, v in body.items() if v is not None}
    raw = await http.post("/v1/messages", json=body, headers=headers)
    assert raw.status_code == status
    error = raw.json()
    assert error["type"] == "error"
    assert error["error"]["type"] == kind
    assert needle in error["error"]["message"]


def test_no_embeddings() -> None:
    dialect = AnthropicDialect()
    call = Call(Route("POST", dialect.routes[0].pattern, "embed"), {}, {}, {})
    assert dialect.embeds is False
    with pytest.raises(SimError) as caught:
        dialect.parse_embed(call, {"model": "sim", "input": "x"})
    assert caught.value.status == 404
