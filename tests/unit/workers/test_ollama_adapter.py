"""The Ollama adapter against the real simulator (and a scripted NDJSON server for the
cases the simulator never sends), through a real ``UpstreamHTTP``."""

from __future__ import annotations

import base64
import contextlib
import json
import struct
from collections.abc import AsyncIterator
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
from services.workers.adapters.ollama import OllamaAdapter
from services.workers.adapters.ollama_mapping import chat_request, embed_request
from services.workers.http import UpstreamHTTP
from services.workers.protocol import StreamEvent, UpstreamCall
from tests.unit.simulator.conftest import Sim, sim  # noqa: F401  (the simulator fixture)
from tests.unit.workers.adapter_kit import USER, call
from tests.unit.workers.adapter_kit import collect as _collect

PNG_B64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
    "YPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)
PNG = f"data:image/png;base64,{PNG_B64}"
TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                "required": ["city"],
            },
        },
    }
]


def deployment(base_url: str, **fields: Any) -> ModelDeployment:
    return ModelDeployment(alias="m", provider="ollama", base_url=base_url, model="sim", **fields)


@pytest_asyncio.fixture(loop_scope="session")
async def adapter() -> AsyncIterator[OllamaAdapter]:
    http = UpstreamHTTP(WorkerSettings())
    yield OllamaAdapter(http)
    await http.close()


@pytest_asyncio.fixture(loop_scope="session")
async def dep(sim: Sim) -> ModelDeployment:  # noqa: F811
    return deployment(sim.url)


async def _drain(adapter: OllamaAdapter, upstream: UpstreamCall, into: list[StreamEvent]) -> None:
    async for event in adapter.stream(upstream):
        into.append(event)


# -- complete ----------------------------------------------------------------------------------


async def test_complete_text(adapter: OllamaAdapter, dep: ModelDeployment, sim: Sim) -> None:  # noqa: F811
    result = await adapter.complete(call(dep))
    choice = result.response["choices"][0]
    assert result.response["object"] == "chat.completion"
    assert choice["message"]["content"] == completion_text(16)
    assert result.finish_reason == choice["finish_reason"] == "stop"
    assert result.usage is not None
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (4, 16)
    assert result.response["usage"]["total_tokens"] == 20
    sent = sim.app.stats.last_request
    assert sent["stream"] is False and sent["messages"] == USER
    assert "authorization" not in sim.app.stats.last_headers


async def test_bearer_key_is_sent_when_configured(adapter: OllamaAdapter, sim: Sim) -> None:  # noqa: F811
    await adapter.complete(call(deployment(sim.url, api_key="proxy-key")))
    assert sim.app.stats.last_headers["authorization"] == "Bearer proxy-key"


async def test_max_tokens_gives_length(adapter: OllamaAdapter, dep: ModelDeployment) -> None:
    result = await adapter.complete(call(dep, max_tokens=3))
    assert result.response["choices"][0]["message"]["content"] == "lorem ipsum dolor "
    assert result.finish_reason == "length"
    assert result.usage is not None and result.usage.completion_tokens == 3


async def test_stop_sequence_gives_stop(adapter: OllamaAdapter, dep: ModelDeployment) -> None:
    result = await adapter.complete(call(dep, stop="dolor"))
    assert result.response["choices"][0]["message"]["content"] == "lorem ipsum "
    assert result.finish_reason == "stop"


async def test_complete_tool_call(adapter: OllamaAdapter, dep: ModelDeployment) -> None:
    result = await adapter.complete(call(dep, "sim?tool_call=1", tools=TOOLS))
    message = result.response["choices"][0]["message"]
    assert result.finish_reason == "tool_calls" and message["content"] is None
    (tool_call,) = message["tool_calls"]
    assert tool_call["id"] and tool_call["type"] == "function"
    assert tool_call["function"]["name"] == "get_weather"
    assert json.loads(tool_call["function"]["arguments"]) == {"city": "x", "days": 1}


async def test_conversation_round_trip_via_echo(
    adapter: OllamaAdapter, dep: ModelDeployment
) -> None:
    messages: list[Any] = [
        {"role": "system", "content": "be brief"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is this"},
                {"type": "image_url", "image_url": {"url": PNG}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    result = await adapter.complete(call(dep, "sim?echo=1", messages=messages, tools=TOOLS))
    assert result.response["choices"][0]["message"]["content"] == (
        "system:be brief | user:what is this | image:image/png | "
        'call:get_weather({"city":"Paris"}) | result:sunny'
    )


# -- stream ------------------------------------------------------------------------------------


async def test_stream_text(adapter: OllamaAdapter, dep: ModelDeployment, sim: Sim) -> None:  # noqa: F811
    events = await _collect(adapter, call(dep, "sim?tokens=3", stream=True))
    assert sim.app.stats.last_request["stream"] is True
    assert events[0].chunk["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(
        e.chunk["choices"][0]["delta"].get("content") or "" for e in events if e.chunk["choices"]
    )
    assert text == "lorem ipsum dolor "
    finishes = [e.finish_reason for e in events if e.finish_reason]
    assert finishes == ["stop"]
    last = events[-1]
    assert last.chunk["choices"] == [] and last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (4, 3)
    assert len({e.chunk["id"] for e in events}) == 1


async def test_stream_tool_call(adapter: OllamaAdapter, dep: ModelDeployment) -> None:
    events = await _collect(adapter, call(dep, "sim?tool_call=1", stream=True, tools=TOOLS))
    deltas = [
        d
        for e in events
        if e.chunk["choices"]
        for d in e.chunk["choices"][0]["delta"].get("tool_calls", [])
    ]
    assert deltas[0]["index"] == 0 and deltas[0]["id"] and deltas[0]["type"] == "function"
    assert deltas[0]["function"]["name"] == "get_weather"
    arguments = "".join(d["function"]["arguments"] for d in deltas)
    assert json.loads(arguments) == {"city": "x", "days": 1}
    assert [e.finish_reason for e in events if e.finish_reason] == ["tool_calls"]
    assert events[-1].usage is not None and events[-1].usage.completion_tokens > 0


async def test_cut_stream_is_a_protocol_error_not_a_finish(
    adapter: OllamaAdapter, dep: ModelDeployment
) -> None:
    events: list[StreamEvent] = []
    with pytest.raises(UpstreamProtocolError):
        await _drain(adapter, call(dep, "sim?fault=cut&fault_after=2", stream=True), events)
    assert len(events) == 3  # role + two tokens
    assert not any(e.finish_reason for e in events)


async def test_malformed_line_is_a_protocol_error(
    adapter: OllamaAdapter, dep: ModelDeployment
) -> None:
    events: list[StreamEvent] = []
    with pytest.raises(UpstreamProtocolError):
        await _drain(adapter, call(dep, "sim?fault=malformed", stream=True), events)
    assert not any(e.finish_reason for e in events)


# -- errors ------------------------------------------------------------------------------------

ERRORS: dict[str, tuple[type[GatewayError], int, bool]] = {
    "400": (UpstreamBadRequest, 400, False),
    "401": (UpstreamAuthFailed, 502, False),
    "403": (UpstreamAuthFailed, 502, False),
    "404": (UpstreamError, 502, True),
    "413": (UpstreamBadRequest, 400, False),
    "429": (UpstreamRateLimited, 429, True),
    "500": (UpstreamError, 502, True),
    "503": (UpstreamUnavailable, 503, True),
    "529": (UpstreamUnavailable, 503, True),
}


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("fault", list(ERRORS))
async def test_error_mapping(
    adapter: OllamaAdapter, dep: ModelDeployment, fault: str, stream: bool
) -> None:
    kind, status, retryable = ERRORS[fault]
    upstream = call(dep, f"sim?fault={fault}&retry_after=3", stream=stream)
    with pytest.raises(GatewayError) as caught:
        await (_collect(adapter, upstream) if stream else adapter.complete(upstream))
    error = caught.value
    assert type(error) is kind
    assert (error.status, error.retryable) == (status, retryable)
    if fault == "429":
        assert error.retry_after == 3
    if fault in ("503", "529"):
        assert "server busy" in error.message


# -- a scripted Ollama for what the simulator never sends -----------------------------------


@contextlib.asynccontextmanager
async def scripted(status: int, body: bytes) -> AsyncIterator[str]:
    async def handler(request: aiohttp.web.Request) -> aiohttp.web.Response:
        return aiohttp.web.Response(status=status, body=body, content_type="application/x-ndjson")

    app = aiohttp.web.Application()
    app.router.add_post("/api/chat", handler)
    runner = aiohttp.web.AppRunner(app)
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_error_line_mid_stream_is_an_upstream_error(adapter: OllamaAdapter) -> None:
    lines = (
        b'{"model":"m","created_at":"2024-01-01T00:00:00Z",'
        b'"message":{"role":"assistant","content":"Hi"},"done":false}\n'
        b'{"error":"an error was encountered while running the model: unexpected EOF"}\n'
    )
    events: list[StreamEvent] = []
    async with scripted(200, lines) as url:
        with pytest.raises(UpstreamError) as caught:
            await _drain(adapter, call(deployment(url), stream=True), events)
    assert type(caught.value) is UpstreamError and "unexpected EOF" in caught.value.message
    assert not any(e.finish_reason for e in events)


async def test_model_not_found_body(adapter: OllamaAdapter) -> None:
    body = b'{"error":"model \\"llama9\\" not found, try pulling it first"}'
    async with scripted(404, body) as url:
        with pytest.raises(UpstreamError) as caught:
            await adapter.complete(call(deployment(url)))
    assert caught.value.code == "upstream_model_not_found"
    assert 'model "llama9" not found' in caught.value.message


async def test_done_reason_length_and_whole_tool_calls_from_ollama(
    adapter: OllamaAdapter,
) -> None:
    lines = (
        b'{"model":"m","created_at":"2024-01-01T00:00:00Z","message":{"role":"assistant",'
        b'"content":"","tool_calls":[{"function":{"name":"a","arguments":{"x":1}}},'
        b'{"function":{"name":"b","arguments":{}}}]},"done":false}\n'
        b'{"model":"m","created_at":"2024-01-01T00:00:01Z","message":{"role":"assistant",'
        b'"content":""},"done_reason":"stop","done":true,"eval_count":7}\n'
    )
    async with scripted(200, lines) as url:
        events = await _collect(adapter, call(deployment(url), stream=True))
    starts = [
        e.chunk["choices"][0]["delta"]["tool_calls"][0]
        for e in events
        if e.chunk["choices"] and "tool_calls" in e.chunk["choices"][0]["delta"]
    ]
    assert [(s["index"], s["function"]["name"]) for s in starts] == [(0, "a"), (1, "b")]
    assert json.loads(starts[0]["function"]["arguments"]) == {"x": 1}
    assert len({s["id"] for s in starts}) == 2
    assert [e.finish_reason for e in events if e.finish_reason] == ["tool_calls"]
    usage = events[-1].usage
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (0, 7)


# -- request translation -----------------------------------------------------------------------


def test_request_translation() -> None:
    dep = deployment("http://ollama.invalid")
    body = {
        "model": "llama3.2",
        "messages": [
            {"role": "developer", "content": "rules"},
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": PNG}}]},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"id": "c9", "type": "function", "function": {"name": "f", "arguments": ""}}
                ],
            },
            {"role": "tool", "tool_call_id": "c9", "content": [{"type": "text", "text": "ok"}]},
        ],
        "temperature": 0.2,
        "top_p": 0.9,
        "seed": 7,
        "presence_penalty": 0.1,
        "frequency_penalty": 0.3,
        "max_completion_tokens": 50,
        "stop": "END",
        "tools": TOOLS,
        "tool_choice": "auto",
        "response_format": {"type": "json_object"},
    }
    assert chat_request(body, dep, stream=True) == {
        "model": "llama3.2",
        "messages": [
            {"role": "system", "content": "rules"},
            {"role": "user", "content": "", "images": [PNG_B64]},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"function": {"name": "f", "arguments": {}}}],
            },
            {"role": "tool", "content": "ok", "tool_name": "f"},
        ],
        "stream": True,
        "tools": TOOLS,
        "options": {
            "temperature": 0.2,
            "top_p": 0.9,
            "seed": 7,
            "presence_penalty": 0.1,
            "frequency_penalty": 0.3,
            "num_predict": 50,
            "stop": ["END"],
        },
        "format": "json",
    }


def test_request_translation_small_cases() -> None:
    dep = deployment("http://ollama.invalid")
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    body = {
        "model": "m",
        "messages": USER,
        "max_tokens": 5,
        "tools": TOOLS,
        "tool_choice": "none",
        "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}},
    }
    out = chat_request(body, dep, stream=False)
    assert out["stream"] is False and "tools" not in out
    assert out["options"] == {"num_predict": 5} and out["format"] == schema
    plain = chat_request(
        {"model": "m", "messages": USER, "response_format": {"type": "text"}}, dep, stream=False
    )
    assert plain == {"model": "m", "messages": USER, "stream": False}


def test_image_url_by_reference_is_rejected_naming_the_param() -> None:
    message = {
        "role": "user",
        "content": [
            {"type": "text", "text": "hi"},
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
        ],
    }
    with pytest.raises(InvalidRequest) as caught:
        chat_request({"model": "m", "messages": [message]}, deployment("http://x"), stream=False)
    assert caught.value.param == "messages[0].content[1].image_url.url"


def test_bad_tool_arguments_are_rejected_naming_the_param() -> None:
    message = {
        "role": "assistant",
        "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1"}}
        ],
    }
    with pytest.raises(InvalidRequest) as caught:
        chat_request({"model": "m", "messages": [message]}, deployment("http://x"), stream=False)
    assert caught.value.param == "messages[0].tool_calls[0].function.arguments"


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("logprobs", True),
        ("n", 2),
        ("tool_choice", "required"),
        ("tool_choice", {"type": "function", "function": {"name": "get_weather"}}),
        ("response_format", {"type": "grammar"}),
    ],
)
def test_drop_params_both_ways(param: str, value: Any) -> None:
    body = {"model": "m", "messages": USER, "tools": TOOLS, param: value}
    dropped = chat_request(body, deployment("http://x"), stream=False)
    assert dropped["tools"] == TOOLS and "format" not in dropped and param not in dropped
    with pytest.raises(InvalidRequest) as caught:
        chat_request(body, deployment("http://x", drop_params=False), stream=False)
    assert caught.value.param == param and caught.value.status == 400


# -- embeddings --------------------------------------------------------------------------------


async def test_embed_float(adapter: OllamaAdapter, dep: ModelDeployment, sim: Sim) -> None:  # noqa: F811
    body = {"model": "sim", "input": ["first text", "second text"], "dimensions": 8}
    result = await adapter.embed(UpstreamCall(dep, body, stream=False, timeout_s=10))
    assert sim.app.stats.last_request == body
    data = result.response["data"]
    assert result.response["object"] == "list" and [d["index"] for d in data] == [0, 1]
    assert len(data[0]["embedding"]) == 8 and data[0]["embedding"] != data[1]["embedding"]
    assert result.usage is not None and result.usage.prompt_tokens == 6
    assert result.response["usage"] == {"prompt_tokens": 6, "total_tokens": 6}


async def test_embed_base64(adapter: OllamaAdapter, dep: ModelDeployment) -> None:
    body = {"model": "sim", "input": "hello", "encoding_format": "base64"}
    result = await adapter.embed(UpstreamCall(dep, body, stream=False, timeout_s=10))
    raw = base64.b64decode(result.response["data"][0]["embedding"])
    assert len(struct.unpack(f"<{len(raw) // 4}f", raw)) == 16


async def test_embed_errors(adapter: OllamaAdapter, dep: ModelDeployment) -> None:
    body = {"model": "sim?fault=503", "input": "x"}
    with pytest.raises(UpstreamUnavailable):
        await adapter.embed(UpstreamCall(dep, body, stream=False, timeout_s=10))


def test_embed_request_translation() -> None:
    dep = deployment("http://x")
    assert embed_request({"model": "m", "input": "a", "user": "u"}, dep) == {
        "model": "m",
        "input": "a",
    }
    with pytest.raises(InvalidRequest) as caught:
        embed_request({"model": "m", "input": [[1, 2, 3]]}, dep)
    assert caught.value.param == "input"
    assert embed_request({"model": "m", "input": ["a"], "truncate_to": 3}, dep) == {
        "model": "m",
        "input": ["a"],
    }
    with pytest.raises(InvalidRequest) as caught:
        embed_request(
            {"model": "m", "input": ["a"], "truncate_to": 3},
            deployment("http://x", drop_params=False),
        )
    assert caught.value.param == "truncate_to"
