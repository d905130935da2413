"""The Anthropic adapter against the real simulator (and a scripted SSE server for the
mid-stream error event the simulator never sends), through a real ``UpstreamHTTP``;
plus the request, answer and stream translation rules on their own."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp.web
import pytest
import pytest_asyncio

from services.runtime.errors import (
    GatewayError,
    InvalidRequest,
    UpstreamAuthFailed,
    UpstreamBadRequest,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamRateLimited,
    UpstreamUnavailable,
)
from services.runtime.settings import ModelDeployment, WorkerSettings
from services.simulator.engine import completion_text
from services.workers.adapters.anthropic import AnthropicAdapter, StreamTranslator
from services.workers.adapters.anthropic_mapping import to_anthropic, to_completion
from services.workers.http import UpstreamHTTP
from services.workers.protocol import StreamEvent, UpstreamCall
from services.workers.sse import SSEMessage
from tests.unit.simulator.conftest import Sim, sim  # noqa: F401  (the simulator fixture)
from tests.unit.workers.adapter_kit import USER, call
from tests.unit.workers.adapter_kit import collect as _collect

PNG = "data:image/png;base64,iVBORw0KGgo="
TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                "required": ["city"],
            },
        },
    }
]


def deployment(base_url: str = "http://127.0.0.1:1", **fields: Any) -> ModelDeployment:
    fields.setdefault("api_key", "sk-ant-test")
    return ModelDeployment(
        alias="claude", provider="anthropic", base_url=base_url, model="sim", **fields
    )


@pytest_asyncio.fixture(loop_scope="session")
async def adapter() -> AsyncIterator[AnthropicAdapter]:
    http = UpstreamHTTP(WorkerSettings())
    yield AnthropicAdapter(http)
    await http.close()


@pytest_asyncio.fixture(loop_scope="session")
async def dep(sim: Sim) -> ModelDeployment:  # noqa: F811
    return deployment(sim.url)


async def _drain(
    adapter: AnthropicAdapter, upstream: UpstreamCall, into: list[StreamEvent]
) -> None:
    async for event in adapter.stream(upstream):
        into.append(event)


def _content(events: list[StreamEvent]) -> str:
    return "".join(
        e.chunk["choices"][0]["delta"].get("content") or "" for e in events if e.chunk["choices"]
    )


def _tool_deltas(events: list[StreamEvent]) -> list[dict[str, Any]]:
    return [
        tc
        for e in events
        if e.chunk["choices"]
        for tc in e.chunk["choices"][0]["delta"].get("tool_calls", [])
    ]


def _text(completion: dict[str, Any]) -> str:
    text: str = completion["choices"][0]["message"]["content"]
    return text


# -- against the simulator -----------------------------------------------------------------------


async def test_complete_text(sim: Sim, adapter: AnthropicAdapter, dep: ModelDeployment) -> None:  # noqa: F811
    result = await adapter.complete(call(dep, "sim?tokens=5"))

    assert _text(result.response) == completion_text(5)
    assert result.response["object"] == "chat.completion"
    assert result.response["model"] == "sim"
    assert result.finish_reason == "stop"
    assert result.usage is not None
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (4, 5)
    assert result.response["usage"]["total_tokens"] == 9
    sent = sim.app.stats.last_request
    assert sent == {
        "model": "sim?tokens=5",
        "messages": [_user("one two three")],
        "max_tokens": 4096,
    }
    headers = sim.app.stats.last_headers
    assert headers["x-api-key"] == "sk-ant-test"
    assert headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in headers


async def test_api_version_from_the_deployment(sim: Sim, adapter: AnthropicAdapter) -> None:  # noqa: F811
    await adapter.complete(call(deployment(sim.url, api_version="2024-01-01"), "sim?tokens=1"))
    assert sim.app.stats.last_headers["anthropic-version"] == "2024-01-01"


async def test_cached_tokens_are_part_of_the_prompt(
    adapter: AnthropicAdapter, dep: ModelDeployment
) -> None:
    result = await adapter.complete(call(dep, "sim?tokens=1&cached_tokens=3"))
    assert result.usage is not None
    assert result.usage.prompt_tokens == 4
    assert result.usage.prompt_tokens_details is not None
    assert result.usage.prompt_tokens_details.cached_tokens == 3


async def test_complete_tool_call(adapter: AnthropicAdapter, dep: ModelDeployment) -> None:
    result = await adapter.complete(call(dep, tools=TOOLS, tool_choice="required"))

    assert result.finish_reason == "tool_calls"
    message = result.response["choices"][0]["message"]
    assert message["content"] is None
    (tool_call,) = message["tool_calls"]
    assert tool_call["id"].startswith("toolu_")
    assert tool_call["type"] == "function"
    assert tool_call["function"]["name"] == "get_weather"
    assert json.loads(tool_call["function"]["arguments"]) == {"city": "x", "days": 1}


async def test_stop_sequence_and_max_tokens(
    adapter: AnthropicAdapter, dep: ModelDeployment
) -> None:
    stopped = await adapter.complete(call(dep, "sim?tokens=10", stop="dolor"))
    assert (_text(stopped.response), stopped.finish_reason) == ("lorem ipsum ", "stop")

    capped = await adapter.complete(call(dep, "sim?tokens=10", max_completion_tokens=3))
    assert (_text(capped.response), capped.finish_reason) == (completion_text(3), "length")


async def test_stream_text(adapter: AnthropicAdapter, dep: ModelDeployment) -> None:
    events = await _collect(adapter, call(dep, "sim?tokens=6", stream=True))

    assert events[0].chunk["choices"][0]["delta"]["role"] == "assistant"
    assert _content(events) == completion_text(6)
    finishes = [e.finish_reason for e in events if e.finish_reason]
    assert finishes == ["stop"]
    last = events[-1]
    assert last.chunk["choices"] == []
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (4, 6)
    assert last.chunk["usage"]["total_tokens"] == 10
    assert len({e.chunk["id"] for e in events}) == 1
    assert all(e.chunk["object"] == "chat.completion.chunk" for e in events)


async def test_stream_tool_call(adapter: AnthropicAdapter, dep: ModelDeployment) -> None:
    events = await _collect(adapter, call(dep, "sim?tool_call=1", stream=True, tools=TOOLS))

    deltas = _tool_deltas(events)
    start = deltas[0]
    assert start["index"] == 0
    assert start["id"].startswith("toolu_")
    assert start["function"]["name"] == "get_weather"
    fragments = [d["function"]["arguments"] for d in deltas]
    assert len([f for f in fragments if f]) >= 2
    assert json.loads("".join(fragments)) == {"city": "x", "days": 1}
    assert [e.finish_reason for e in events if e.finish_reason] == ["tool_calls"]
    assert events[-1].usage is not None


async def test_conversation_reaches_the_simulator_as_understood(
    adapter: AnthropicAdapter, dep: ModelDeployment
) -> None:
    messages = [
        {"role": "system", "content": "be brief"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is this"},
                {"type": "image_url", "image_url": {"url": PNG}},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}},
            ],
        },
        {
            "role": "assistant",
            "content": "let me see",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "user", "content": "thanks"},
    ]
    result = await adapter.complete(call(dep, "sim?echo=1", messages=messages, tools=TOOLS))
    assert _text(result.response) == (
        "system:be brief | user:what is this | image:image/png | image:url | "
        'assistant:let me see | call:get_weather({"city":"Paris"}) | result:sunny | user:thanks'
    )


async def test_embed_is_refused(adapter: AnthropicAdapter, dep: ModelDeployment) -> None:
    with pytest.raises(InvalidRequest):
        await adapter.embed(UpstreamCall(dep, {"model": "sim", "input": "x"}, False, 10))


# -- errors --------------------------------------------------------------------------------------

ERRORS: list[tuple[str, type[GatewayError], int, bool]] = [
    ("400", UpstreamBadRequest, 400, False),
    ("401", UpstreamAuthFailed, 502, False),
    ("403", UpstreamAuthFailed, 502, False),
    ("404", UpstreamError, 502, True),
    ("413", UpstreamBadRequest, 400, False),
    ("429", UpstreamRateLimited, 429, True),
    ("500", UpstreamError, 502, True),
    ("503", UpstreamUnavailable, 503, True),
    ("529", UpstreamUnavailable, 503, True),
]


@pytest.mark.parametrize(("fault", "exc_type", "status", "retryable"), ERRORS)
@pytest.mark.parametrize("stream", [False, True])
async def test_error_mapping(
    adapter: AnthropicAdapter,
    dep: ModelDeployment,
    fault: str,
    exc_type: type[GatewayError],
    status: int,
    retryable: bool,
    stream: bool,
) -> None:
    upstream = call(dep, f"sim?fault={fault}", stream=stream)
    with pytest.raises(GatewayError) as caught:
        await (_collect(adapter, upstream) if stream else adapter.complete(upstream))
    error = caught.value
    assert type(error) is exc_type
    assert (error.status, error.retryable) == (status, retryable)
    assert "simulated fault" in error.message  # the provider's own message
    assert "sk-ant-test" not in error.message
    if fault == "429":
        assert error.retry_after == 1.0


@pytest.mark.parametrize("fault", ["cut", "malformed"])
async def test_broken_stream_is_an_error_not_a_finish(
    adapter: AnthropicAdapter, dep: ModelDeployment, fault: str
) -> None:
    events: list[StreamEvent] = []
    with pytest.raises(UpstreamProtocolError):
        await _drain(adapter, call(dep, f"sim?tokens=8&fault={fault}", stream=True), events)
    assert events  # it had started
    assert not any(e.finish_reason for e in events)


@pytest.mark.parametrize("fault", ["cut", "malformed"])
async def test_broken_body_is_a_protocol_error(
    adapter: AnthropicAdapter, dep: ModelDeployment, fault: str
) -> None:
    with pytest.raises(UpstreamProtocolError):
        await adapter.complete(call(dep, f"sim?fault={fault}"))


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


@contextlib.asynccontextmanager
async def scripted(body: bytes) -> AsyncIterator[str]:
    async def handler(request: aiohttp.web.Request) -> aiohttp.web.Response:
        return aiohttp.web.Response(body=body, content_type="text/event-stream")

    app = aiohttp.web.Application()
    app.router.add_post("/v1/messages", handler)
    runner = aiohttp.web.AppRunner(app)
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


START = {
    "type": "message_start",
    "message": {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 1},
    },
}


def text_start(index: int) -> dict[str, Any]:
    block = {"type": "text", "text": ""}
    return {"type": "content_block_start", "index": index, "content_block": block}


def text_delta(index: int, text: str) -> dict[str, Any]:
    delta = {"type": "text_delta", "text": text}
    return {"type": "content_block_delta", "index": index, "delta": delta}


def tool_start(index: int, call_id: str, name: str) -> dict[str, Any]:
    block = {"type": "tool_use", "id": call_id, "name": name, "input": {}}
    return {"type": "content_block_start", "index": index, "content_block": block}


def json_delta(index: int, partial: str) -> dict[str, Any]:
    delta = {"type": "input_json_delta", "partial_json": partial}
    return {"type": "content_block_delta", "index": index, "delta": delta}


def error_event(kind: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}}


async def test_error_event_mid_stream(adapter: AnthropicAdapter) -> None:
    body = b"".join(
        (
            _sse("message_start", START),
            _sse("content_block_start", text_start(0)),
            _sse("content_block_delta", text_delta(0, "Hi")),
            _sse("error", error_event("overloaded_error", "Overloaded")),
        )
    )
    events: list[StreamEvent] = []
    async with scripted(body) as url:
        with pytest.raises(UpstreamUnavailable) as caught:
            await _drain(adapter, call(deployment(url), stream=True), events)
    assert "Overloaded" in caught.value.message
    assert _content(events) == "Hi"
    assert not any(e.finish_reason for e in events)


# -- translation rules ---------------------------------------------------------------------------


def _user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": [{"type": "text", "text": text}]}


def test_system_is_lifted_and_roles_alternate() -> None:
    body = {
        "model": "claude-x",
        "messages": [
            {"role": "system", "content": "one"},
            {"role": "developer", "content": [{"type": "text", "text": "two"}]},
            {"role": "user", "content": "a"},
            {"role": "user", "content": "b"},
            {"role": "assistant", "content": "c"},
            {"role": "assistant", "content": ""},
            {"role": "user", "content": "d"},
        ],
    }
    out = to_anthropic(body, deployment(), stream=False)
    assert out["system"] == "one\n\ntwo"
    assert out["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "c"}]},
        _user("d"),
    ]
    assert out["max_tokens"] == 4096
    assert "stream" not in out
    assert to_anthropic(body, deployment(), stream=True)["stream"] is True


def test_conversation_starts_with_a_user_turn() -> None:
    body = {"model": "m", "messages": [{"role": "assistant", "content": "hello"}]}
    out = to_anthropic(body, deployment(), stream=False)
    assert [m["role"] for m in out["messages"]] == ["user", "assistant"]


def _call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def test_tool_calls_and_results() -> None:
    body = {
        "model": "m",
        "messages": [
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    _call("c1", "f", '{"a":1}'),
                    _call("c2", "g", ""),
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "r1"},
            {"role": "tool", "tool_call_id": "c2", "content": [{"type": "text", "text": "r2"}]},
            {"role": "user", "content": "and?"},
        ],
    }
    out = to_anthropic(body, deployment(), stream=False)
    assert out["messages"][1] == {
        "role": "assistant",
        "content": [
            {"type": "tool_use", "id": "c1", "name": "f", "input": {"a": 1}},
            {"type": "tool_use", "id": "c2", "name": "g", "input": {}},
        ],
    }
    assert out["messages"][2] == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "c1", "content": "r1"},
            {"type": "tool_result", "tool_use_id": "c2", "content": "r2"},
            {"type": "text", "text": "and?"},
        ],
    }


def test_images() -> None:
    content = [
        {"type": "image_url", "image_url": {"url": PNG}},
        {"type": "image_url", "image_url": {"url": "https://x.test/a.jpg", "detail": "low"}},
    ]
    body = {"model": "m", "messages": [{"role": "user", "content": content}]}
    blocks = to_anthropic(body, deployment(), stream=False)["messages"][0]["content"]
    assert blocks == [
        {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
        },
        {"type": "image", "source": {"type": "url", "url": "https://x.test/a.jpg"}},
    ]


def test_parameters() -> None:
    body = {
        "model": "m",
        "messages": USER,
        "max_tokens": 50,
        "max_completion_tokens": 70,
        "temperature": 0.3,
        "top_p": 0.9,
        "stop": ["x", "y"],
        "user": "u-1",
        "n": 1,
        "tools": TOOLS,
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": False,
    }
    out = to_anthropic(body, deployment(), stream=False)
    assert out["max_tokens"] == 70
    assert (out["temperature"], out["top_p"]) == (0.3, 0.9)
    assert out["stop_sequences"] == ["x", "y"]
    assert out["metadata"] == {"user_id": "u-1"}
    assert out["tools"] == [
        {
            "name": "get_weather",
            "description": "Weather for a city",
            "input_schema": TOOLS[0]["function"]["parameters"],
        }
    ]
    assert out["tool_choice"] == {
        "type": "tool",
        "name": "get_weather",
        "disable_parallel_tool_use": True,
    }
    assert "n" not in out
    assert to_anthropic({**body, "stop": "z"}, deployment(), stream=False)["stop_sequences"] == [
        "z"
    ]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [("auto", {"type": "auto"}), ("required", {"type": "any"}), ("none", {"type": "none"})],
)
def test_tool_choice(choice: str, expected: dict[str, Any]) -> None:
    body = {"model": "m", "messages": USER, "tools": TOOLS, "tool_choice": choice}
    assert to_anthropic(body, deployment(), stream=False)["tool_choice"] == expected


def test_response_format() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    body = {"model": "m", "messages": USER, "response_format": fmt}
    out = to_anthropic(body, deployment(), stream=False)
    assert out["output_config"] == {"format": {"type": "json_schema", "schema": schema}}

    json_object = {**body, "response_format": {"type": "json_object"}}
    assert "output_config" not in to_anthropic(json_object, deployment(), stream=False)
    with pytest.raises(InvalidRequest) as caught:
        to_anthropic(json_object, deployment(drop_params=False), stream=False)
    assert caught.value.param == "response_format"


def test_drop_params_both_ways() -> None:
    body = {"model": "m", "messages": USER, "frequency_penalty": 0.5, "logprobs": True}
    out = to_anthropic(body, deployment(), stream=False)
    assert "frequency_penalty" not in out
    assert "logprobs" not in out
    with pytest.raises(InvalidRequest) as caught:
        to_anthropic(body, deployment(drop_params=False), stream=False)
    assert caught.value.param == "frequency_penalty"
    with pytest.raises(InvalidRequest):
        to_anthropic({**body, "n": 2}, deployment(drop_params=False), stream=False)


def test_invalid_tool_arguments_are_refused() -> None:
    bad = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{nope"}}
    body = {"model": "m", "messages": [*USER, {"role": "assistant", "tool_calls": [bad]}]}
    with pytest.raises(InvalidRequest):
        to_anthropic(body, deployment(), stream=False)


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("end_turn", "stop"),
        ("max_tokens", "length"),
        ("stop_sequence", "stop"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
    ],
)
def test_message_translation(stop_reason: str, finish: str) -> None:
    message = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "content": [
            {"type": "text", "text": "Hello "},
            {"type": "text", "text": "there"},
            {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": [1]}},
        ],
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {
            "input_tokens": 5,
            "output_tokens": 7,
            "cache_read_input_tokens": 20,
            "cache_creation_input_tokens": 3,
        },
    }
    completion, usage, got = to_completion(message)
    assert got == finish
    choice = completion["choices"][0]
    assert choice["finish_reason"] == finish
    assert choice["message"]["content"] == "Hello there"
    assert choice["message"]["tool_calls"] == [
        {"id": "toolu_1", "type": "function", "function": {"name": "f", "arguments": '{"a":[1]}'}}
    ]
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (28, 7, 35)
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 20
    assert completion["model"] == "claude-x"


def _feed(translator: StreamTranslator, *events: dict[str, Any]) -> Iterator[StreamEvent]:
    for data in events:
        yield from translator.feed(SSEMessage(data["type"], json.dumps(data)))


def test_stream_translation_counts_tool_blocks() -> None:
    translator = StreamTranslator("d", "m")
    stop = {"stop_reason": "tool_use", "stop_sequence": None}
    events = list(
        _feed(
            translator,
            START,
            text_start(0),
            text_delta(0, "ok"),
            {"type": "content_block_stop", "index": 0},
            tool_start(1, "t1", "f"),
            json_delta(1, ""),
            json_delta(1, '{"a":'),
            json_delta(1, "1}"),
            tool_start(2, "t2", "g"),
            json_delta(2, "{}"),
            {"type": "message_delta", "delta": stop, "usage": {"output_tokens": 9}},
            {"type": "message_stop"},
        )
    )
    calls: dict[int, dict[str, str]] = {}
    for event in events:
        for tc in _tool_deltas([event]):
            entry = calls.setdefault(tc["index"], {"id": tc.get("id", ""), "arguments": ""})
            entry["arguments"] += tc["function"]["arguments"]
    assert calls == {
        0: {"id": "t1", "arguments": '{"a":1}'},
        1: {"id": "t2", "arguments": "{}"},
    }
    assert _content(events) == "ok"
    assert [e.finish_reason for e in events if e.finish_reason] == ["tool_calls"]
    assert events[-1].usage is not None
    assert (events[-1].usage.prompt_tokens, events[-1].usage.completion_tokens) == (10, 9)
    assert events[-1].chunk["model"] == "claude-x"
    assert translator.done


def test_stream_error_event_types() -> None:
    translator = StreamTranslator("d", "m")
    with pytest.raises(UpstreamError) as caught:
        list(_feed(translator, error_event("invalid_request_error", "bad")))
    assert isinstance(caught.value, UpstreamError)  # never a client 4xx mid-stream
    with pytest.raises(UpstreamRateLimited):
        list(_feed(translator, error_event("rate_limit_error", "slow")))
