"""The Bedrock adapter against the real simulator (and a scripted event-stream server for
the cases the simulator never sends), through a real ``UpstreamHTTP``."""

from __future__ import annotations

import base64
import contextlib
import json
import re
import struct
from collections.abc import AsyncIterator
from typing import Any

import aiohttp.web
import pytest
import pytest_asyncio
from botocore.credentials import Credentials

from services.runtime.errors import (
    GatewayError,
    InvalidRequest,
    UpstreamAuthFailed,
    UpstreamBadRequest,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from services.runtime.settings import ModelDeployment, WorkerSettings
from services.simulator.dialects import aws_eventstream as frames
from services.simulator.engine import completion_text
from services.workers.adapters import aws_signing
from services.workers.adapters.aws_eventstream import Frame
from services.workers.adapters.bedrock import BedrockAdapter, StreamTranslator
from services.workers.adapters.bedrock_mapping import completion, converse_request, http_error
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
            "description": "Weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                "required": ["city"],
            },
        },
    }
]
KEYS = {"aws_access_key_id": "AKIDEXAMPLE", "aws_secret_access_key": "secret"}
SIGV4 = re.compile(
    r"AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/\d{8}/us-east-1/bedrock/aws4_request, "
    r"SignedHeaders=[a-z0-9;-]+, Signature=[0-9a-f]{64}"
)


def deployment(base_url: str, **fields: Any) -> ModelDeployment:
    fields = {**KEYS, **fields} if "api_key" not in fields else fields
    return ModelDeployment(
        alias="m", provider="bedrock", base_url=base_url, model="sim", region="us-east-1", **fields
    )


@pytest_asyncio.fixture(loop_scope="session")
async def adapter() -> AsyncIterator[BedrockAdapter]:
    http = UpstreamHTTP(WorkerSettings())
    yield BedrockAdapter(http)
    await http.close()


@pytest_asyncio.fixture(loop_scope="session")
async def dep(sim: Sim) -> ModelDeployment:  # noqa: F811
    return deployment(sim.url)


async def _drain(adapter: BedrockAdapter, upstream: UpstreamCall, into: list[StreamEvent]) -> None:
    async for event in adapter.stream(upstream):
        into.append(event)


def _text(events: list[StreamEvent]) -> str:
    return "".join(
        e.chunk["choices"][0]["delta"].get("content") or "" for e in events if e.chunk["choices"]
    )


# -- complete ----------------------------------------------------------------------------------


async def test_complete_text_is_signed(
    adapter: BedrockAdapter,
    dep: ModelDeployment,
    sim: Sim,  # noqa: F811
) -> None:
    result = await adapter.complete(call(dep))
    choice = result.response["choices"][0]
    assert result.response["object"] == "chat.completion"
    assert choice["message"]["content"] == completion_text(16)
    assert result.finish_reason == choice["finish_reason"] == "stop"
    assert result.usage is not None
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (4, 16)
    headers = sim.app.stats.last_headers
    assert SIGV4.fullmatch(headers["authorization"])
    assert re.fullmatch(r"\d{8}T\d{6}Z", headers["x-amz-date"])
    assert "x-amz-security-token" not in headers
    assert sim.app.stats.last_request == {
        "messages": [{"role": "user", "content": [{"text": "one two three"}]}]
    }


async def test_model_with_behaviour_is_percent_encoded(
    adapter: BedrockAdapter, dep: ModelDeployment
) -> None:
    result = await adapter.complete(call(dep, model="sim?tokens=2&cached_tokens=1"))
    assert result.response["choices"][0]["message"]["content"] == completion_text(2)
    assert result.usage is not None and result.usage.prompt_tokens == 4
    assert result.usage.prompt_tokens_details is not None
    assert result.usage.prompt_tokens_details.cached_tokens == 1


async def test_session_token_and_bearer_key(adapter: BedrockAdapter, sim: Sim) -> None:  # noqa: F811
    await adapter.complete(call(deployment(sim.url, aws_session_token="token-1")))
    assert sim.app.stats.last_headers["x-amz-security-token"] == "token-1"
    await adapter.complete(call(deployment(sim.url, api_key="bedrock-key")))
    assert sim.app.stats.last_headers["authorization"] == "Bearer bedrock-key"


async def test_default_chain_is_resolved_once_per_deployment(
    sim: Sim,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[int] = []

    def chain() -> Credentials:
        calls.append(1)
        return Credentials("AKIDEXAMPLE", "secret")

    monkeypatch.setattr(aws_signing, "_default_chain", chain)
    http = UpstreamHTTP(WorkerSettings())
    try:
        adapter = BedrockAdapter(http)
        dep = ModelDeployment(
            alias="chain", provider="bedrock", base_url=sim.url, model="sim", region="us-east-1"
        )
        await adapter.complete(call(dep))
        await adapter.complete(call(dep))
        assert len(calls) == 1
        assert SIGV4.fullmatch(sim.app.stats.last_headers["authorization"])
        monkeypatch.setattr(aws_signing, "_default_chain", lambda: None)
        other = dep.model_copy(update={"deployment": "nothing"})
        with pytest.raises(UpstreamAuthFailed, match="no AWS credentials"):
            await adapter.complete(call(other))
    finally:
        await http.close()


async def test_complete_tool_call(adapter: BedrockAdapter, dep: ModelDeployment) -> None:
    result = await adapter.complete(call(dep, tools=TOOLS, tool_choice="required"))
    message = result.response["choices"][0]["message"]
    assert result.finish_reason == "tool_calls"
    assert message["content"] is None
    (tool,) = message["tool_calls"]
    assert tool["id"].startswith("tooluse_") and tool["function"]["name"] == "get_weather"
    assert json.loads(tool["function"]["arguments"]) == {"city": "x", "days": 1}


async def test_max_tokens_and_stop(adapter: BedrockAdapter, dep: ModelDeployment) -> None:
    cut = await adapter.complete(call(dep, max_tokens=2))
    assert cut.finish_reason == "length"
    stopped = await adapter.complete(call(dep, stop="dolor"))
    assert stopped.finish_reason == "stop"
    assert stopped.response["choices"][0]["message"]["content"] == "lorem ipsum "


async def test_echo_shows_translated_conversation(
    adapter: BedrockAdapter, dep: ModelDeployment
) -> None:
    messages = [
        {"role": "system", "content": "be brief"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": PNG}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "t1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "t1", "content": "sunny"},
    ]
    result = await adapter.complete(call(dep, model="sim?echo=1", messages=messages, tools=TOOLS))
    assert result.response["choices"][0]["message"]["content"] == (
        'system:be brief | user:look | image:image/png | call:get_weather({"city":"Oslo"}) '
        "| result:sunny"
    )


# -- stream ------------------------------------------------------------------------------------


async def test_stream_text(adapter: BedrockAdapter, dep: ModelDeployment) -> None:
    events = await _collect(adapter, call(dep, model="sim?tokens=3", stream=True))
    assert events[0].chunk["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert _text(events) == completion_text(3)
    assert [e.finish_reason for e in events if e.finish_reason] == ["stop"]
    last = events[-1]
    assert last.chunk["choices"] == [] and last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (4, 3)


async def test_stream_tool_call_fragments_join(
    adapter: BedrockAdapter, dep: ModelDeployment
) -> None:
    choice = {"type": "function", "function": {"name": "get_weather"}}
    events = await _collect(adapter, call(dep, stream=True, tools=TOOLS, tool_choice=choice))
    deltas = [
        e.chunk["choices"][0]["delta"]["tool_calls"][0]
        for e in events
        if e.chunk["choices"] and "tool_calls" in e.chunk["choices"][0]["delta"]
    ]
    assert deltas[0]["id"].startswith("tooluse_")
    assert deltas[0]["function"]["name"] == "get_weather" and deltas[0]["index"] == 0
    arguments = "".join(d["function"]["arguments"] for d in deltas)
    assert len(deltas) >= 3 and json.loads(arguments) == {"city": "x", "days": 1}
    assert [e.finish_reason for e in events if e.finish_reason] == ["tool_calls"]
    assert events[-1].usage is not None


@pytest.mark.parametrize("fault", ["cut", "malformed"])
async def test_broken_stream_is_a_protocol_error(
    adapter: BedrockAdapter, dep: ModelDeployment, fault: str
) -> None:
    events: list[StreamEvent] = []
    with pytest.raises(UpstreamProtocolError):
        await _drain(adapter, call(dep, model=f"sim?fault={fault}", stream=True), events)
    assert _text(events) == completion_text(2)
    assert not any(e.finish_reason for e in events)


async def test_stream_http_error(adapter: BedrockAdapter, dep: ModelDeployment) -> None:
    with pytest.raises(UpstreamRateLimited):
        await _collect(adapter, call(dep, model="sim?fault=429", stream=True))


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "error", "status", "retryable"),
    [
        ("400", UpstreamBadRequest, 400, False),
        ("401", UpstreamAuthFailed, 502, False),
        ("403", UpstreamAuthFailed, 502, False),
        ("404", UpstreamError, 502, True),
        ("413", UpstreamBadRequest, 400, False),
        ("429", UpstreamRateLimited, 429, True),
        ("500", UpstreamError, 502, True),
        ("503", UpstreamUnavailable, 503, True),
        ("529", UpstreamUnavailable, 503, True),
    ],
)
async def test_error_faults(
    adapter: BedrockAdapter,
    dep: ModelDeployment,
    fault: str,
    error: type[GatewayError],
    status: int,
    retryable: bool,
) -> None:
    with pytest.raises(GatewayError) as caught:
        await adapter.complete(call(dep, model=f"sim?fault={fault}"))
    assert type(caught.value) is error
    assert (caught.value.status, caught.value.retryable) == (status, retryable)
    assert "simulated fault" in caught.value.message
    assert "secret" not in caught.value.message


@pytest.mark.parametrize(
    ("error_type", "status", "error"),
    [
        ("ModelTimeoutException", 408, UpstreamTimeout),
        ("ServiceQuotaExceededException", 400, UpstreamRateLimited),
        ("ModelNotReadyException", 429, UpstreamUnavailable),
        ("ModelErrorException", 424, UpstreamError),
        ("ResourceNotFoundException", 404, UpstreamError),
        ("ExpiredTokenException", 403, UpstreamAuthFailed),
        ("SomethingNew", 409, UpstreamBadRequest),
    ],
)
def test_http_error_types(error_type: str, status: int, error: type[GatewayError]) -> None:
    headers = {"x-amzn-errortype": f"{error_type}:http://internal.amazon.com/coral/x/"}
    mapped = http_error("dep", status, headers, b'{"message":"nope"}')
    assert type(mapped) is error and "nope" in mapped.message
    if error_type == "ResourceNotFoundException":
        assert mapped.code == "upstream_model_not_found"


def test_drop_params_both_ways() -> None:
    body = {"model": "m", "messages": USER, "seed": 1, "temperature": 0.5}
    dropped = converse_request(body, deployment("http://x.invalid"))
    assert "seed" not in json.dumps(dropped)
    assert dropped["inferenceConfig"] == {"temperature": 0.5}
    with pytest.raises(InvalidRequest) as caught:
        converse_request(body, deployment("http://x.invalid", drop_params=False))
    assert caught.value.param == "seed"


# -- translation rules -------------------------------------------------------------------------


def test_request_translation() -> None:
    body = {
        "model": "m",
        "messages": [
            {"role": "system", "content": "rule one"},
            {"role": "developer", "content": [{"type": "text", "text": "rule two"}]},
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": PNG}}]},
            {"role": "user", "content": "and this"},
            {
                "role": "assistant",
                "content": "calling",
                "tool_calls": [
                    {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                    {
                        "id": "b",
                        "type": "function",
                        "function": {"name": "g", "arguments": '{"x":1}'},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "a", "content": "ra"},
            {"role": "tool", "tool_call_id": "b", "content": [{"type": "text", "text": "rb"}]},
            {"role": "user", "content": "next"},
        ],
        "max_completion_tokens": 50,
        "top_p": 0.9,
        "stop": ["END"],
        "tools": TOOLS,
        "tool_choice": "auto",
    }
    out = converse_request(body, deployment("http://x.invalid"))
    assert out["system"] == [{"text": "rule one"}, {"text": "rule two"}]
    assert out["messages"] == [
        {
            "role": "user",
            "content": [
                {"image": {"format": "png", "source": {"bytes": PNG_B64}}},
                {"text": "and this"},
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"text": "calling"},
                {"toolUse": {"toolUseId": "a", "name": "f", "input": {}}},
                {"toolUse": {"toolUseId": "b", "name": "g", "input": {"x": 1}}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"toolResult": {"toolUseId": "a", "content": [{"text": "ra"}]}},
                {"toolResult": {"toolUseId": "b", "content": [{"text": "rb"}]}},
                {"text": "next"},
            ],
        },
    ]
    assert out["inferenceConfig"] == {"maxTokens": 50, "topP": 0.9, "stopSequences": ["END"]}
    spec = out["toolConfig"]["tools"][0]["toolSpec"]
    assert spec["name"] == "get_weather" and spec["description"] == "Weather for a city"
    assert spec["inputSchema"]["json"] == TOOLS[0]["function"]["parameters"]
    assert out["toolConfig"]["toolChoice"] == {"auto": {}}


def test_tool_choice_variants() -> None:
    dep = deployment("http://x.invalid")

    def config(choice: Any, messages: list[Any] = USER) -> Any:
        body = {"model": "m", "messages": messages, "tools": TOOLS, "tool_choice": choice}
        return converse_request(body, dep).get("toolConfig")

    assert config("required")["toolChoice"] == {"any": {}}
    named = config({"type": "function", "function": {"name": "get_weather"}})
    assert named["toolChoice"] == {"tool": {"name": "get_weather"}}
    assert config("none") is None
    history = [
        *USER,
        {
            "role": "assistant",
            "tool_calls": [
                {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "a", "content": "r"},
    ]
    kept = config("none", history)
    assert kept is not None and "toolChoice" not in kept


def test_image_urls_are_rejected_by_param() -> None:
    part = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
    body = {"model": "m", "messages": [{"role": "user", "content": [part]}]}
    with pytest.raises(InvalidRequest) as caught:
        converse_request(body, deployment("http://x.invalid"))
    assert caught.value.param == "messages[0].content[0].image_url.url"


def test_response_translation() -> None:
    data = {
        "output": {
            "message": {
                "role": "assistant",
                "content": [
                    {"text": "Let me "},
                    {"text": "check."},
                    {"toolUse": {"toolUseId": "tu1", "name": "f", "input": {"a": [1]}}},
                ],
            }
        },
        "stopReason": "tool_use",
        "usage": {
            "inputTokens": 10,
            "outputTokens": 5,
            "totalTokens": 22,
            "cacheReadInputTokens": 4,
            "cacheWriteInputTokens": 3,
        },
        "metrics": {"latencyMs": 10},
    }
    result = completion("dep", data, "m")
    message = result.response["choices"][0]["message"]
    assert message["content"] == "Let me check."
    assert message["tool_calls"][0]["id"] == "tu1"
    assert json.loads(message["tool_calls"][0]["function"]["arguments"]) == {"a": [1]}
    assert result.finish_reason == "tool_calls"
    assert result.usage is not None
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (17, 5)
    assert result.usage.total_tokens == 22
    assert result.usage.prompt_tokens_details is not None
    assert result.usage.prompt_tokens_details.cached_tokens == 4
    for reason, finish in [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("guardrail_intervened", "content_filter"),
        ("content_filtered", "content_filter"),
    ]:
        assert completion("dep", {**data, "stopReason": reason}, "m").finish_reason == finish


@pytest.mark.parametrize(
    ("exception_type", "error"),
    [
        ("throttlingException", UpstreamRateLimited),
        ("modelStreamErrorException", UpstreamError),
        ("internalServerException", UpstreamError),
        ("serviceUnavailableException", UpstreamUnavailable),
        ("validationException", UpstreamBadRequest),
    ],
)
def test_stream_exceptions(exception_type: str, error: type[GatewayError]) -> None:
    translator = StreamTranslator("dep", "m")
    translator.feed(Frame("event", "messageStart", {"role": "assistant"}))
    with pytest.raises(GatewayError) as caught:
        translator.feed(Frame("exception", exception_type, {"message": "boom"}))
    assert type(caught.value) is error and "boom" in caught.value.message


# -- a scripted Bedrock for what the simulator never sends -------------------------------------


@contextlib.asynccontextmanager
async def scripted(body: bytes) -> AsyncIterator[str]:
    async def handler(request: aiohttp.web.Request) -> aiohttp.web.Response:
        return aiohttp.web.Response(body=body, content_type="application/vnd.amazon.eventstream")

    app = aiohttp.web.Application()
    app.router.add_post("/model/{model}/converse-stream", handler)
    runner = aiohttp.web.AppRunner(app)
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_exception_mid_stream_is_an_upstream_error(adapter: BedrockAdapter) -> None:
    body = (
        frames.event("messageStart", {"role": "assistant"})
        + frames.event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hi"}})
        + frames.exception("modelStreamErrorException", "The model stopped")
    )
    events: list[StreamEvent] = []
    async with scripted(body) as url:
        with pytest.raises(UpstreamError) as caught:
            await _drain(adapter, call(deployment(url), stream=True), events)
    assert type(caught.value) is UpstreamError and "The model stopped" in caught.value.message
    assert _text(events) == "Hi" and not any(e.finish_reason for e in events)


async def test_stream_without_metadata_is_a_protocol_error(adapter: BedrockAdapter) -> None:
    body = frames.event("messageStart", {"role": "assistant"}) + frames.event(
        "messageStop", {"stopReason": "end_turn"}
    )
    events: list[StreamEvent] = []
    async with scripted(body) as url:
        with pytest.raises(UpstreamProtocolError):
            await _drain(adapter, call(deployment(url), stream=True), events)
    assert not any(e.finish_reason for e in events)


# -- embeddings --------------------------------------------------------------------------------


async def test_embeddings(adapter: BedrockAdapter, dep: ModelDeployment) -> None:
    upstream = UpstreamCall(
        dep, {"model": "sim", "input": ["one two three", "four"], "dimensions": 256}, False, 10
    )
    result = await adapter.embed(upstream)
    data = result.response["data"]
    assert result.response["object"] == "list"
    assert [d["index"] for d in data] == [0, 1]
    assert all(len(d["embedding"]) == 256 for d in data)
    assert result.usage is not None and result.usage.prompt_tokens == 4 + 2
    assert result.response["usage"] == {"prompt_tokens": 6, "total_tokens": 6}


async def test_embeddings_base64_and_errors(
    adapter: BedrockAdapter,
    dep: ModelDeployment,
    sim: Sim,  # noqa: F811
) -> None:
    upstream = UpstreamCall(
        dep, {"model": "sim", "input": "one", "encoding_format": "base64"}, False, 10
    )
    result = await adapter.embed(upstream)
    raw = base64.b64decode(result.response["data"][0]["embedding"])
    assert len(struct.unpack(f"<{len(raw) // 4}f", raw)) == 1024
    assert sim.app.stats.last_request == {"normalize": True, "inputText": "one"}
    with pytest.raises(UpstreamBadRequest, match="not a valid enum value"):
        await adapter.embed(
            UpstreamCall(dep, {"model": "sim", "input": "a", "dimensions": 7}, False, 10)
        )
    with pytest.raises(UpstreamRateLimited):
        await adapter.embed(UpstreamCall(dep, {"model": "sim?fault=429", "input": "a"}, False, 10))
    with pytest.raises(InvalidRequest):
        await adapter.embed(UpstreamCall(dep, {"model": "sim", "input": [[1, 2]]}, False, 10))
