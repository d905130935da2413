"""The Gemini adapter against the real simulator (and a scripted server for what the
simulator never sends), through a real ``UpstreamHTTP``."""

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
    UpstreamTimeout,
    UpstreamUnavailable,
)
from services.runtime.settings import ModelDeployment, WorkerSettings
from services.simulator.engine import completion_text
from services.workers.adapters.gemini import GeminiAdapter
from services.workers.adapters.gemini_mapping import chat_request, embed_request
from services.workers.http import UpstreamHTTP
from services.workers.protocol import StreamEvent, UpstreamCall
from tests.unit.simulator.conftest import Sim, sim  # noqa: F401  (the simulator fixture)
from tests.unit.workers.adapter_kit import USER, call
from tests.unit.workers.adapter_kit import collect as _collect

PNG_B64 = "iVBORw0KGgo="
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
                "additionalProperties": False,
            },
        },
    }
]


def deployment(base_url: str, **fields: Any) -> ModelDeployment:
    fields.setdefault("api_key", "gkey")
    return ModelDeployment(alias="m", provider="gemini", base_url=base_url, model="sim", **fields)


@pytest_asyncio.fixture(loop_scope="session")
async def adapter() -> AsyncIterator[GeminiAdapter]:
    http = UpstreamHTTP(WorkerSettings())
    yield GeminiAdapter(http)
    await http.close()


@pytest_asyncio.fixture(loop_scope="session")
async def dep(sim: Sim) -> ModelDeployment:  # noqa: F811
    return deployment(sim.url)


async def _drain(adapter: GeminiAdapter, upstream: UpstreamCall, into: list[StreamEvent]) -> None:
    async for event in adapter.stream(upstream):
        into.append(event)


def _deltas(events: list[StreamEvent]) -> list[dict[str, Any]]:
    return [e.chunk["choices"][0]["delta"] for e in events if e.chunk["choices"]]


# -- complete ----------------------------------------------------------------------------------


async def test_complete_text(adapter: GeminiAdapter, dep: ModelDeployment, sim: Sim) -> None:  # noqa: F811
    result = await adapter.complete(call(dep, "sim?tokens=5"))
    choice = result.response["choices"][0]
    assert result.response["object"] == "chat.completion"
    assert result.response["model"] == "sim"
    assert choice["message"] == {
        "role": "assistant",
        "content": completion_text(5),
        "refusal": None,
    }
    assert result.finish_reason == choice["finish_reason"] == "stop"
    assert result.usage is not None
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (4, 5)
    assert result.response["usage"]["total_tokens"] == 9
    assert sim.app.stats.last_request == {
        "contents": [{"role": "user", "parts": [{"text": "one two three"}]}]
    }
    assert sim.app.stats.last_headers["x-goog-api-key"] == "gkey"


async def test_cached_tokens(adapter: GeminiAdapter, dep: ModelDeployment) -> None:
    result = await adapter.complete(call(dep, "sim?cached_tokens=2"))
    assert result.usage is not None and result.usage.cached_tokens == 2


async def test_max_tokens_gives_length(adapter: GeminiAdapter, dep: ModelDeployment) -> None:
    result = await adapter.complete(call(dep, max_tokens=3))
    assert result.response["choices"][0]["message"]["content"] == completion_text(3)
    assert result.finish_reason == "length"


async def test_stop_sequence_gives_stop(adapter: GeminiAdapter, dep: ModelDeployment) -> None:
    result = await adapter.complete(call(dep, stop=["dolor"]))
    assert result.response["choices"][0]["message"]["content"] == "lorem ipsum "
    assert result.finish_reason == "stop"


async def test_complete_tool_call(adapter: GeminiAdapter, dep: ModelDeployment) -> None:
    named = {"type": "function", "function": {"name": "get_weather"}}
    result = await adapter.complete(call(dep, tools=TOOLS, tool_choice=named))
    message = result.response["choices"][0]["message"]
    assert result.finish_reason == "tool_calls" and message["content"] is None
    (tool_call,) = message["tool_calls"]
    assert tool_call["id"].startswith("call_") and tool_call["type"] == "function"
    assert tool_call["function"]["name"] == "get_weather"
    assert json.loads(tool_call["function"]["arguments"]) == {"city": "x", "days": 1}


async def test_conversation_round_trip_via_echo(
    adapter: GeminiAdapter,
    dep: ModelDeployment,
    sim: Sim,  # noqa: F811
) -> None:
    messages: list[Any] = [
        {"role": "system", "content": "be brief"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is this"},
                {"type": "image_url", "image_url": {"url": PNG}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
            ],
        },
        {"role": "user", "content": "and this"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                },
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_2", "content": '{"sky": "grey"}'},
    ]
    result = await adapter.complete(call(dep, "sim?echo=1", messages=messages, tools=TOOLS))
    assert result.response["choices"][0]["message"]["content"] == (
        "system:be brief | user:what is this | image:image/png | image:url | user:and this | "
        'call:get_weather({"city":"Paris"}) | call:get_weather({"city":"Rome"}) | '
        'result:sunny | result:{"sky":"grey"}'
    )
    sent = sim.app.stats.last_request["contents"]
    assert [c["role"] for c in sent] == ["user", "model", "user"]  # same roles merged


# -- stream ------------------------------------------------------------------------------------


async def test_stream_text(adapter: GeminiAdapter, dep: ModelDeployment, sim: Sim) -> None:  # noqa: F811
    events = await _collect(adapter, call(dep, "sim?tokens=3", stream=True))
    assert sim.app.stats.last_request == {
        "contents": [{"role": "user", "parts": [{"text": "one two three"}]}]
    }
    assert events[0].chunk["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(d.get("content") or "" for d in _deltas(events))
    assert text == completion_text(3)
    assert [e.finish_reason for e in events if e.finish_reason] == ["stop"]
    last = events[-1]
    assert last.chunk["choices"] == [] and last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (4, 3)
    assert len({e.chunk["id"] for e in events}) == 1


async def test_stream_max_tokens(adapter: GeminiAdapter, dep: ModelDeployment) -> None:
    events = await _collect(adapter, call(dep, stream=True, max_completion_tokens=2))
    assert "".join(d.get("content") or "" for d in _deltas(events)) == completion_text(2)
    assert [e.finish_reason for e in events if e.finish_reason] == ["length"]


async def test_stream_tool_call(adapter: GeminiAdapter, dep: ModelDeployment) -> None:
    events = await _collect(adapter, call(dep, stream=True, tools=TOOLS, tool_choice="required"))
    deltas = [d for delta in _deltas(events) for d in delta.get("tool_calls", [])]
    assert deltas[0]["index"] == 0 and deltas[0]["id"] and deltas[0]["type"] == "function"
    assert deltas[0]["function"]["name"] == "get_weather"
    arguments = "".join(d["function"]["arguments"] for d in deltas)
    assert json.loads(arguments) == {"city": "x", "days": 1}
    assert [e.finish_reason for e in events if e.finish_reason] == ["tool_calls"]
    assert events[-1].usage is not None and events[-1].usage.completion_tokens > 0


async def test_cut_stream_is_a_protocol_error_not_a_finish(
    adapter: GeminiAdapter, dep: ModelDeployment
) -> None:
    events: list[StreamEvent] = []
    with pytest.raises(UpstreamProtocolError):
        await _drain(adapter, call(dep, "sim?fault=cut&fault_after=2", stream=True), events)
    assert len(events) == 3  # role + two tokens
    assert not any(e.finish_reason for e in events)


async def test_malformed_event_is_a_protocol_error(
    adapter: GeminiAdapter, dep: ModelDeployment
) -> None:
    events: list[StreamEvent] = []
    with pytest.raises(UpstreamProtocolError):
        await _drain(adapter, call(dep, "sim?fault=malformed", stream=True), events)
    assert not any(e.finish_reason for e in events)


async def test_malformed_body_is_a_protocol_error(
    adapter: GeminiAdapter, dep: ModelDeployment
) -> None:
    with pytest.raises(UpstreamProtocolError):
        await adapter.complete(call(dep, "sim?fault=malformed"))


# -- errors ------------------------------------------------------------------------------------

ERRORS: dict[str, tuple[type[GatewayError], int, bool]] = {
    "400": (UpstreamBadRequest, 400, False),
    "401": (UpstreamAuthFailed, 502, False),  # Google: 400 INVALID_ARGUMENT, API_KEY_INVALID
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
    adapter: GeminiAdapter, dep: ModelDeployment, fault: str, stream: bool
) -> None:
    kind, status, retryable = ERRORS[fault]
    upstream = call(dep, f"sim?fault={fault}&retry_after=3", stream=stream)
    with pytest.raises(GatewayError) as caught:
        await (_collect(adapter, upstream) if stream else adapter.complete(upstream))
    error = caught.value
    assert type(error) is kind
    assert (error.status, error.retryable) == (status, retryable)
    assert "gkey" not in error.message
    if fault == "429":
        assert error.retry_after == 3  # from the RetryInfo detail: Gemini sends no header
    if fault == "404":
        assert error.code == "upstream_model_not_found"
    if fault in ("503", "529"):
        assert "overloaded" in error.message


async def test_missing_key_is_an_auth_failure(adapter: GeminiAdapter, sim: Sim) -> None:  # noqa: F811
    with pytest.raises(UpstreamAuthFailed) as caught:
        await adapter.complete(call(deployment(sim.url, api_key=None)))
    assert "PERMISSION_DENIED" in caught.value.message


# -- a scripted Gemini for what the simulator never sends --------------------------------------


@contextlib.asynccontextmanager
async def scripted(status: int, body: bytes, content_type: str) -> AsyncIterator[str]:
    async def handler(request: aiohttp.web.Request) -> aiohttp.web.Response:
        return aiohttp.web.Response(status=status, body=body, content_type=content_type)

    app = aiohttp.web.Application()
    app.router.add_route("POST", "/{tail:.*}", handler)
    runner = aiohttp.web.AppRunner(app)
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def _sse(*events: Any) -> bytes:
    return b"".join(b"data: " + json.dumps(e).encode() + b"\r\n\r\n" for e in events)


def _text_event(text: str, **candidate: Any) -> dict[str, Any]:
    return {"candidates": [{"content": {"parts": [{"text": text}], "role": "model"}, **candidate}]}


async def test_error_event_mid_stream_is_an_upstream_error(adapter: GeminiAdapter) -> None:
    body = _sse(
        _text_event("Hi"),
        {
            "error": {
                "code": 500,
                "message": "An internal error has occurred.",
                "status": "INTERNAL",
            }
        },
    )
    events: list[StreamEvent] = []
    async with scripted(200, body, "text/event-stream") as url:
        with pytest.raises(UpstreamError) as caught:
            await _drain(adapter, call(deployment(url), stream=True), events)
    assert "internal error" in caught.value.message
    assert not any(e.finish_reason for e in events)


async def test_blocked_prompt_is_content_filter(adapter: GeminiAdapter) -> None:
    answer = {
        "promptFeedback": {"blockReason": "SAFETY"},
        "usageMetadata": {"promptTokenCount": 7, "totalTokenCount": 7},
    }
    async with scripted(200, json.dumps(answer).encode(), "application/json") as url:
        result = await adapter.complete(call(deployment(url)))
    async with scripted(200, _sse(answer), "text/event-stream") as url:
        events = await _collect(adapter, call(deployment(url), stream=True))
    assert result.finish_reason == "content_filter"
    assert result.response["choices"][0]["message"]["content"] == ""
    assert result.usage is not None and result.usage.prompt_tokens == 7
    assert [e.finish_reason for e in events if e.finish_reason] == ["content_filter"]


async def test_thoughts_safety_ids_and_candidates(adapter: GeminiAdapter) -> None:
    answer = {
        "candidates": [
            {
                "content": {
                    "parts": [
                        {"text": "thinking...", "thought": True},
                        {"text": "Hel"},
                        {"text": "lo"},
                    ],
                    "role": "model",
                },
                "finishReason": "SAFETY",
                "index": 0,
            },
            {
                "content": {
                    "parts": [{"functionCall": {"id": "fc-9", "name": "f", "args": {"a": 1}}}],
                    "role": "model",
                },
                "finishReason": "STOP",
                "index": 1,
            },
        ],
        "usageMetadata": {
            "promptTokenCount": 10,
            "candidatesTokenCount": 4,
            "thoughtsTokenCount": 6,
            "cachedContentTokenCount": 8,
            "totalTokenCount": 20,
        },
        "modelVersion": "gemini-2.5-flash",
    }
    async with scripted(200, json.dumps(answer).encode(), "application/json") as url:
        result = await adapter.complete(call(deployment(url), n=2))
    first, second = result.response["choices"]
    assert first["message"]["content"] == "Hello" and first["finish_reason"] == "content_filter"
    assert second["index"] == 1 and second["finish_reason"] == "tool_calls"
    assert second["message"]["tool_calls"][0]["id"] == "fc-9"
    assert result.response["model"] == "gemini-2.5-flash"
    usage = result.usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens) == (10, 10, 8)
    assert usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == 6


async def test_stream_without_usage_is_estimated(adapter: GeminiAdapter) -> None:
    body = _sse(_text_event("Hello "), _text_event("world", finishReason="STOP"))
    async with scripted(200, body, "text/event-stream") as url:
        events = await _collect(adapter, call(deployment(url), stream=True))
    assert "".join(d.get("content") or "" for d in _deltas(events)) == "Hello world"
    usage = events[-1].usage
    assert usage is not None and usage.prompt_tokens > 0 and usage.completion_tokens > 0


@pytest.mark.parametrize(
    ("status", "error", "kind", "retry_after"),
    [
        (
            429,
            {
                "status": "RESOURCE_EXHAUSTED",
                "details": [
                    {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}
                ],
            },
            UpstreamRateLimited,
            7.0,
        ),
        (504, {"status": "DEADLINE_EXCEEDED"}, UpstreamTimeout, None),
        (400, {"status": "FAILED_PRECONDITION"}, UpstreamBadRequest, None),
        (401, {"status": "UNAUTHENTICATED"}, UpstreamAuthFailed, None),
        (413, {}, UpstreamBadRequest, None),
        (502, {}, UpstreamError, None),
    ],
)
async def test_google_error_bodies(
    adapter: GeminiAdapter,
    status: int,
    error: dict[str, Any],
    kind: type[GatewayError],
    retry_after: float | None,
) -> None:
    body = json.dumps({"error": {"code": status, "message": "m", **error}}).encode()
    async with scripted(status, body, "application/json") as url:
        with pytest.raises(GatewayError) as caught:
            await adapter.complete(call(deployment(url)))
    assert type(caught.value) is kind
    assert caught.value.retry_after == retry_after


# -- embeddings --------------------------------------------------------------------------------


async def test_embeddings(adapter: GeminiAdapter, dep: ModelDeployment, sim: Sim) -> None:  # noqa: F811
    upstream = UpstreamCall(
        dep, {"model": "sim", "input": ["one", "two words"], "dimensions": 8}, False, 10
    )
    result = await adapter.embed(upstream)
    data = result.response["data"]
    assert [d["index"] for d in data] == [0, 1]
    assert all(len(d["embedding"]) == 8 for d in data)
    assert result.usage is not None and result.usage.prompt_tokens > 0
    assert sim.app.stats.last_request["requests"][1] == {
        "model": "models/sim",
        "content": {"parts": [{"text": "two words"}]},
        "outputDimensionality": 8,
    }

    as_base64 = await adapter.embed(
        UpstreamCall(dep, {"model": "sim", "input": "one", "encoding_format": "base64"}, False, 10)
    )
    raw = base64.b64decode(as_base64.response["data"][0]["embedding"])
    assert len(struct.unpack(f"<{len(raw) // 4}f", raw)) == 16


# -- request translation -----------------------------------------------------------------------


def test_request_translation() -> None:
    dep = deployment("http://gemini.invalid")
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    body = {
        "model": "gemini-2.5-flash",
        "messages": [
            {"role": "developer", "content": "rules"},
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": PNG}}]},
            {
                "role": "assistant",
                "content": "let me look",
                "tool_calls": [
                    {"id": "c9", "type": "function", "function": {"name": "f", "arguments": ""}}
                ],
            },
            {"role": "tool", "tool_call_id": "c9", "content": [{"type": "text", "text": "ok"}]},
            {"role": "user", "content": "thanks"},
        ],
        "temperature": 0.2,
        "top_p": 0.9,
        "seed": 7,
        "n": 2,
        "presence_penalty": 0.1,
        "frequency_penalty": 0.3,
        "max_completion_tokens": 50,
        "stop": "END",
        "tools": TOOLS,
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}},
    }
    assert chat_request(body, dep, stream=False) == {
        "contents": [
            {"role": "user", "parts": [{"inlineData": {"mimeType": "image/png", "data": PNG_B64}}]},
            {
                "role": "model",
                "parts": [
                    {"text": "let me look"},
                    {"functionCall": {"id": "c9", "name": "f", "args": {}}},
                ],
            },
            {
                "role": "user",
                "parts": [
                    {"functionResponse": {"id": "c9", "name": "f", "response": {"content": "ok"}}},
                    {"text": "thanks"},
                ],
            },
        ],
        "systemInstruction": {"parts": [{"text": "rules"}]},
        "tools": [
            {
                "functionDeclarations": [
                    {
                        "name": "get_weather",
                        "description": "Weather for a city",
                        "parametersJsonSchema": TOOLS[0]["function"]["parameters"],
                    }
                ]
            }
        ],
        "toolConfig": {
            "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}
        },
        "generationConfig": {
            "temperature": 0.2,
            "topP": 0.9,
            "candidateCount": 2,
            "seed": 7,
            "presencePenalty": 0.1,
            "frequencyPenalty": 0.3,
            "maxOutputTokens": 50,
            "stopSequences": ["END"],
            "responseMimeType": "application/json",
            "responseJsonSchema": schema,
        },
    }


@pytest.mark.parametrize(
    ("choice", "mode"), [("auto", "AUTO"), ("required", "ANY"), ("none", "NONE")]
)
def test_tool_choice_modes(choice: str, mode: str) -> None:
    body = {"model": "m", "messages": USER, "tools": TOOLS, "tool_choice": choice}
    out = chat_request(body, deployment("http://gemini.invalid"), stream=False)
    assert out["toolConfig"] == {"functionCallingConfig": {"mode": mode}}


def test_small_translation_rules() -> None:
    dep = deployment("http://gemini.invalid")
    plain = chat_request(
        {
            "model": "m",
            "messages": [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "a"},
            ],
            "max_tokens": 5,
            "response_format": {"type": "json_object"},
        },
        dep,
        stream=True,
    )
    assert plain == {
        "contents": [
            {"role": "user", "parts": [{"text": "q"}]},
            {"role": "model", "parts": [{"text": "a"}]},
        ],
        "generationConfig": {"maxOutputTokens": 5, "responseMimeType": "application/json"},
    }
    url = "https://example.com/photo.jpg?size=2"
    by_reference = chat_request(
        {
            "model": "m",
            "messages": [
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}
            ],
        },
        dep,
        stream=False,
    )
    assert by_reference["contents"][0]["parts"] == [
        {"fileData": {"mimeType": "image/jpeg", "fileUri": url}}
    ]
    with pytest.raises(InvalidRequest, match="answers no earlier assistant tool call"):
        chat_request(
            {"model": "m", "messages": [{"role": "tool", "tool_call_id": "x", "content": "r"}]},
            dep,
            stream=False,
        )
    assert embed_request({"model": "models/e", "input": "hi"}, dep) == {
        "requests": [{"model": "models/e", "content": {"parts": [{"text": "hi"}]}}]
    }


def test_drop_params_both_ways() -> None:
    body = {"model": "m", "messages": USER, "logit_bias": {"1": 2}, "n": 2, "max_tokens": 4}
    kept = chat_request(body, deployment("http://gemini.invalid"), stream=True)
    assert kept["generationConfig"] == {"maxOutputTokens": 4}  # n > 1 cannot stream
    with pytest.raises(InvalidRequest) as caught:
        chat_request(body, deployment("http://gemini.invalid", drop_params=False), stream=False)
    assert caught.value.param == "logit_bias" and caught.value.status == 400
    with pytest.raises(InvalidRequest) as unsupported_choice:
        chat_request(
            {"model": "m", "messages": USER, "tool_choice": {"type": "allowed_tools"}},
            deployment("http://gemini.invalid", drop_params=False),
            stream=False,
        )
    assert unsupported_choice.value.param == "tool_choice"


async def test_model_is_percent_encoded_into_the_path(
    adapter: GeminiAdapter, dep: ModelDeployment
) -> None:
    result = await adapter.complete(call(dep, "models/sim?tokens=2&echo=0"))
    assert result.response["choices"][0]["message"]["content"] == completion_text(2)
