"""The simulator's Ollama dialect as Ollama's own Python SDK sees it (real server)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import ollama
import orjson
import pytest
import pytest_asyncio

from services.simulator.dialects.ollama import BUSY, created_at
from services.simulator.engine import completion_text

from .conftest import Sim

pytestmark = pytest.mark.asyncio(loop_scope="session")

USER: list[Any] = [{"role": "user", "content": "one two three"}]  # 4 prompt tokens
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
PNG_B64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
    "YPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)
RFC3339_NANO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z")


@pytest_asyncio.fixture(loop_scope="session")
async def client(sim: Sim) -> AsyncIterator[ollama.AsyncClient]:
    sdk = ollama.AsyncClient(host=sim.url)
    yield sdk
    await sdk._client.aclose()


async def _drain(stream: AsyncIterator[ollama.ChatResponse], into: list[str]) -> None:
    async for part in stream:
        into.append(part.message.content or "")


async def test_text_answer_has_ollama_shape_and_usage(client: ollama.AsyncClient) -> None:
    reply = await client.chat(model="sim", messages=USER)
    assert reply.message.role == "assistant"
    assert reply.message.content == completion_text(16)
    assert reply.done is True and reply.done_reason == "stop"
    assert reply.model == "sim"
    assert reply.prompt_eval_count == 4 and reply.eval_count == 16
    assert reply.created_at is not None and RFC3339_NANO.fullmatch(reply.created_at)
    assert reply.total_duration is not None and reply.eval_duration is not None
    assert reply.total_duration > reply.eval_duration > 0


async def test_created_at_is_go_rfc3339_nano() -> None:
    assert created_at(1_700_000_000_123_456_000) == "2023-11-14T22:13:20.123456Z"
    assert created_at(1_700_000_000_000_000_000) == "2023-11-14T22:13:20Z"
    assert created_at(1_700_000_000_000_000_001) == "2023-11-14T22:13:20.000000001Z"


async def test_stream_is_ndjson_ending_with_done(client: ollama.AsyncClient) -> None:
    parts = [p async for p in await client.chat(model="sim?tokens=3", messages=USER, stream=True)]
    assert [p.message.content for p in parts] == ["lorem ", "ipsum ", "dolor ", ""]
    assert [p.done for p in parts] == [False, False, False, True]
    last = parts[-1]
    assert last.done_reason == "stop" and last.eval_count == 3 and last.prompt_eval_count == 4
    assert all(p.done_reason is None and p.eval_count is None for p in parts[:-1])


async def test_stream_is_the_default_when_absent(sim: Sim, http: httpx.AsyncClient) -> None:
    response = await http.post("/api/chat", json={"model": "sim?tokens=2", "messages": USER})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-ndjson"
    lines = [orjson.loads(line) for line in response.text.splitlines()]
    assert len(lines) == 3 and lines[-1]["done"] is True
    assert set(lines[0]) == {"model", "created_at", "message", "done"}


async def test_stream_false_gives_one_object(http: httpx.AsyncClient) -> None:
    body = {"model": "sim?tokens=2", "messages": USER, "stream": False}
    response = await http.post("/api/chat", json=body)
    assert response.headers["content-type"] == "application/json"
    data = response.json()
    assert list(data)[:5] == ["model", "created_at", "message", "done_reason", "done"]


async def test_tool_call_non_streamed(client: ollama.AsyncClient) -> None:
    reply = await client.chat(model="sim?tool_call=1", messages=USER, tools=TOOLS)
    calls = reply.message.tool_calls or []
    assert len(calls) == 1
    assert calls[0].function.name == "get_weather"
    assert calls[0].function.arguments == {"city": "x", "days": 1}
    assert reply.message.content == "" and reply.done_reason == "stop"


async def test_tool_call_streamed_arrives_whole(client: ollama.AsyncClient) -> None:
    stream = await client.chat(model="sim?tool_call=1", messages=USER, tools=TOOLS, stream=True)
    parts = [p async for p in stream]
    with_calls = [p for p in parts if p.message.tool_calls]
    assert len(with_calls) == 1 and not with_calls[0].done
    call = (with_calls[0].message.tool_calls or [])[0]
    assert call.function.arguments == {"city": "x", "days": 1}
    assert parts[-1].done and parts[-1].done_reason == "stop"


async def test_echo_shows_images_tool_calls_and_results(client: ollama.AsyncClient) -> None:
    messages: list[Any] = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "what is this", "images": [PNG_B64]},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
        },
        {"role": "tool", "content": "sunny", "tool_name": "get_weather"},
    ]
    reply = await client.chat(model="sim?echo=1", messages=messages, tools=TOOLS)
    assert reply.message.content == (
        "system:be brief | user:what is this | image:image/png | "
        'call:get_weather({"city":"Paris"}) | result:sunny'
    )


async def test_stop_sequence_reports_stop(client: ollama.AsyncClient) -> None:
    reply = await client.chat(model="sim", messages=USER, options={"stop": ["dolor"]})
    assert reply.message.content == "lorem ipsum " and reply.done_reason == "stop"


async def test_num_predict_gives_length(client: ollama.AsyncClient) -> None:
    reply = await client.chat(model="sim", messages=USER, options={"num_predict": 3})
    assert reply.message.content == "lorem ipsum dolor "
    assert reply.done_reason == "length" and reply.eval_count == 3


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"messages": USER}, "model is required"),
        ({"model": "sim", "messages": "hi"}, "cannot unmarshal string"),
        ({"model": "sim", "messages": [{"role": "wizard", "content": "x"}]}, "invalid role"),
        ({"model": "sim", "messages": [{"role": "user", "content": ["x"]}]}, "unmarshal array"),
        ({"model": "sim", "messages": [{"role": "user", "images": ["!!"]}]}, "illegal base64"),
        ({"model": "sim?bogus=1", "messages": USER}, "bogus"),
    ],
)
async def test_invalid_requests_are_400_with_error_string(
    http: httpx.AsyncClient, body: dict[str, Any], message: str
) -> None:
    response = await http.post("/api/chat", json=body)
    assert response.status_code == 400
    assert set(response.json()) == {"error"} and message in response.json()["error"]


@pytest.mark.parametrize(
    ("fault", "status"),
    [
        ("400", 400),
        ("401", 401),
        ("403", 403),
        ("404", 404),
        ("413", 413),
        ("429", 429),
        ("500", 500),
        ("503", 503),
        ("529", 503),
    ],
)
async def test_error_faults_raise_response_error(
    client: ollama.AsyncClient, fault: str, status: int
) -> None:
    with pytest.raises(ollama.ResponseError) as caught:
        await client.chat(model=f"sim?fault={fault}", messages=USER)
    assert caught.value.status_code == status
    assert isinstance(caught.value.error, str) and caught.value.error
    if status == 503:
        assert caught.value.error == BUSY


async def test_error_fault_in_stream_mode_is_an_http_error(client: ollama.AsyncClient) -> None:
    stream = await client.chat(model="sim?fault=500", messages=USER, stream=True)
    with pytest.raises(ollama.ResponseError) as caught:
        await _drain(stream, [])
    assert caught.value.status_code == 500


async def test_rate_limit_sends_retry_after(http: httpx.AsyncClient) -> None:
    body = {"model": "sim?fault=429&retry_after=3", "messages": USER, "stream": False}
    response = await http.post("/api/chat", json=body)
    assert response.status_code == 429 and response.headers["retry-after"] == "3"
    assert set(response.json()) == {"error"}


async def test_malformed_fault_sends_a_broken_json_line(client: ollama.AsyncClient) -> None:
    seen: list[str] = []
    stream = await client.chat(model="sim?fault=malformed", messages=USER, stream=True)
    with pytest.raises(ValueError):  # json.JSONDecodeError inside the SDK
        await _drain(stream, seen)
    assert seen == ["lorem ", "ipsum "]


async def test_cut_stream_has_no_done_line(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/api/chat", json={"model": "sim?fault=cut&fault_after=2", "messages": USER}
    )
    lines = [orjson.loads(line) for line in response.text.splitlines()]
    assert len(lines) == 2 and not any(line["done"] for line in lines)


async def test_embed_list_and_usage(client: ollama.AsyncClient) -> None:
    reply = await client.embed(model="sim", input=["first text", "second text"], dimensions=8)
    assert len(reply.embeddings) == 2 and all(len(v) == 8 for v in reply.embeddings)
    assert reply.embeddings[0] != reply.embeddings[1]
    assert reply.model == "sim" and reply.prompt_eval_count == 6
    assert reply.total_duration is not None and reply.load_duration is not None


async def test_embed_single_string(client: ollama.AsyncClient) -> None:
    reply = await client.embed(model="sim", input="hello")
    assert len(reply.embeddings) == 1 and len(reply.embeddings[0]) == 16


async def test_embed_errors(client: ollama.AsyncClient, http: httpx.AsyncClient) -> None:
    with pytest.raises(ollama.ResponseError) as caught:
        await client.embed(model="sim?fault=429", input="x")
    assert caught.value.status_code == 429
    response = await http.post("/api/embed", json={"model": "sim", "input": [1, 2]})
    assert response.status_code == 400 and response.json() == {"error": "invalid input type"}
