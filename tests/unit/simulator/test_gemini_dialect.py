"""The simulator's Gemini dialect, driven by the official google-genai SDK (and raw HTTP
for what the SDK hides: percent-encoded model names, the JSON-array stream, auth)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from google import genai
from google.genai import errors, types

from services.simulator.engine import completion_text

from .conftest import Sim

pytestmark = pytest.mark.asyncio(loop_scope="session")

USER = "one two three"  # 3 words -> 4 prompt tokens
KEY = {"x-goog-api-key": "k"}
WEATHER = types.FunctionDeclaration(
    name="get_weather",
    description="Weather for a city",
    parameters_json_schema={
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city"],
    },
)
NOOP = types.FunctionDeclaration(name="noop", parameters=types.Schema(type=types.Type.OBJECT))
PNG = b"\x89PNG\r\n\x1a\n"


_OPEN: list[genai.client.AsyncClient] = []


def _client(sim: Sim, behaviour: str | None = None) -> genai.Client:
    """An SDK client on the simulator that never retries (closed after each test)."""
    headers = {"X-Sim-Behavior": behaviour} if behaviour else None
    client = genai.Client(
        api_key="x",
        http_options=types.HttpOptions(
            base_url=sim.url,
            headers=headers,
            retry_options=types.HttpRetryOptions(attempts=1),
        ),
    )
    _OPEN.append(client.aio)
    return client


@pytest_asyncio.fixture(autouse=True, loop_scope="session")
async def _settled(sim: Sim) -> AsyncIterator[None]:
    sim.app.stats.reset()
    yield
    while _OPEN:
        await _OPEN.pop().aclose()
    assert await sim.app.stats.wait_until(lambda s: s.active == 0, 5)


@pytest_asyncio.fixture(loop_scope="session")
async def raw(sim: Sim) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sim.url, timeout=10) as client:
        yield client


def _config(**fields: Any) -> types.GenerateContentConfig:
    return types.GenerateContentConfig(**fields)


# -- answers -------------------------------------------------------------------------------------


async def test_text_answer_and_usage(sim: Sim) -> None:
    response = await _client(sim, "tokens=5").aio.models.generate_content(
        model="sim", contents=USER
    )

    assert response.text == completion_text(5)
    assert response.candidates is not None
    candidate = response.candidates[0]
    assert candidate.finish_reason == types.FinishReason.STOP
    assert candidate.index == 0
    assert candidate.content is not None and candidate.content.role == "model"
    usage = response.usage_metadata
    assert usage is not None
    assert (usage.prompt_token_count, usage.candidates_token_count) == (4, 5)
    assert usage.total_token_count == 9
    assert usage.cached_content_token_count is None
    assert response.model_version == "sim"
    assert response.response_id
    assert sim.app.stats.last_headers["x-goog-api-key"] == "x"
    assert sim.app.stats.last_request["contents"] == [{"parts": [{"text": USER}], "role": "user"}]


async def test_cached_tokens_are_reported(sim: Sim) -> None:
    response = await _client(sim, "cached_tokens=3").aio.models.generate_content(
        model="sim", contents=USER
    )
    assert response.usage_metadata is not None
    assert response.usage_metadata.cached_content_token_count == 3


async def test_stream_one_event_per_token(sim: Sim, raw: httpx.AsyncClient) -> None:
    stream = await _client(sim, "tokens=4").aio.models.generate_content_stream(
        model="sim", contents=USER
    )
    chunks = [chunk async for chunk in stream]

    assert "".join(c.text or "" for c in chunks) == completion_text(4)
    assert len(chunks) == 5
    finishes = [c.candidates[0].finish_reason for c in chunks if c.candidates]
    assert finishes == [None] * 4 + [types.FinishReason.STOP]
    running = [c.usage_metadata.candidates_token_count for c in chunks if c.usage_metadata]
    assert running == [1, 2, 3, 4, 4]
    last = chunks[-1].usage_metadata
    assert last is not None and (last.prompt_token_count, last.candidates_token_count) == (4, 4)
    assert len({c.response_id for c in chunks}) == 1

    wire = await raw.post(
        "/v1beta/models/sim:streamGenerateContent?alt=sse",
        headers=KEY,
        json={"contents": [{"parts": [{"text": USER}]}]},
    )
    assert wire.headers["content-type"].startswith("text/event-stream")
    frames = [f for f in wire.text.split("\r\n\r\n") if f]
    assert all(f.startswith("data: ") for f in frames) and len(frames) == 17


async def test_stream_without_sse_is_a_json_array(raw: httpx.AsyncClient) -> None:
    wire = await raw.post(
        "/v1beta/models/sim%3Ftokens%3D3:streamGenerateContent",
        headers=KEY,
        json={"contents": [{"role": "user", "parts": [{"text": USER}]}]},
    )
    assert wire.status_code == 200
    assert wire.headers["content-type"].startswith("application/json")
    events = wire.json()
    assert [e["candidates"][0]["content"]["parts"][0]["text"] for e in events] == [
        "lorem ",
        "ipsum ",
        "dolor ",
        "",
    ]
    assert events[-1]["candidates"][0]["finishReason"] == "STOP"
    assert events[-1]["usageMetadata"]["candidatesTokenCount"] == 3


async def test_max_output_tokens_gives_max_tokens(sim: Sim) -> None:
    client = _client(sim, "tokens=10")
    response = await client.aio.models.generate_content(
        model="sim", contents=USER, config=_config(max_output_tokens=3)
    )
    assert response.text == completion_text(3)
    assert response.candidates is not None
    assert response.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS

    stream = await client.aio.models.generate_content_stream(
        model="sim", contents=USER, config=_config(max_output_tokens=2)
    )
    chunks = [c async for c in stream]
    assert "".join(c.text or "" for c in chunks) == completion_text(2)
    assert chunks[-1].candidates is not None
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.MAX_TOKENS


async def test_stop_sequence_cuts_with_stop(sim: Sim) -> None:
    response = await _client(sim).aio.models.generate_content(
        model="sim", contents=USER, config=_config(stop_sequences=["dolor"])
    )
    assert response.text == "lorem ipsum "
    assert response.candidates is not None
    assert response.candidates[0].finish_reason == types.FinishReason.STOP
    assert sim.app.stats.last_request["generationConfig"] == {"stopSequences": ["dolor"]}


# -- tools ---------------------------------------------------------------------------------------


async def test_forced_function_call(sim: Sim) -> None:
    config = _config(
        tools=[types.Tool(function_declarations=[NOOP, WEATHER])],
        tool_config=types.ToolConfig(
            function_calling_config=types.FunctionCallingConfig(
                mode=types.FunctionCallingConfigMode.ANY, allowed_function_names=["get_weather"]
            )
        ),
    )
    response = await _client(sim).aio.models.generate_content(
        model="sim", contents=USER, config=config
    )
    assert response.function_calls is not None
    (call,) = response.function_calls
    assert call.name == "get_weather"
    assert call.args == {"city": "x", "days": 1}
    assert response.candidates is not None
    assert response.candidates[0].finish_reason == types.FinishReason.STOP

    stream = await _client(sim).aio.models.generate_content_stream(
        model="sim", contents=USER, config=config
    )
    chunks = [c async for c in stream]
    assert len(chunks) == 1  # the whole call at once, with the finish reason and usage
    assert chunks[0].function_calls is not None
    assert chunks[0].function_calls[0].args == {"city": "x", "days": 1}
    assert chunks[0].usage_metadata is not None


async def test_tool_call_behaviour_and_none_mode(sim: Sim) -> None:
    tools = [types.Tool(function_declarations=[NOOP])]
    forced = await _client(sim, "tool_call=1").aio.models.generate_content(
        model="sim", contents=USER, config=_config(tools=tools)
    )
    assert forced.function_calls is not None and forced.function_calls[0].name == "noop"

    none = types.ToolConfig(
        function_calling_config=types.FunctionCallingConfig(
            mode=types.FunctionCallingConfigMode.NONE
        )
    )
    text = await _client(sim, "tool_call=1&tokens=2").aio.models.generate_content(
        model="sim", contents=USER, config=_config(tools=tools, tool_config=none)
    )
    assert text.function_calls is None and text.text == completion_text(2)


async def test_conversation_understood_via_echo(sim: Sim) -> None:
    contents = [
        types.Content(
            role="user",
            parts=[
                types.Part.from_text(text="what is this"),
                types.Part.from_bytes(data=PNG, mime_type="image/png"),
                types.Part.from_uri(file_uri="https://example.com/a.jpg", mime_type="image/jpeg"),
            ],
        ),
        types.Content(
            role="model",
            parts=[types.Part.from_function_call(name="look", args={"b": 2, "a": 1})],
        ),
        types.Content(
            role="user",
            parts=[types.Part.from_function_response(name="look", response={"output": "a cat"})],
        ),
    ]
    response = await _client(sim, "echo=1").aio.models.generate_content(
        model="sim", contents=contents, config=_config(system_instruction="be brief")
    )
    assert response.text == (
        "system:be brief | user:what is this | image:image/png | image:url | "
        'call:look({"a":1,"b":2}) | result:a cat'
    )


# -- validation ----------------------------------------------------------------------------------


async def _post(raw: httpx.AsyncClient, body: Any, headers: Any = KEY) -> httpx.Response:
    return await raw.post("/v1beta/models/sim:generateContent", headers=headers, json=body)


async def test_missing_key_is_refused_like_google(raw: httpx.AsyncClient) -> None:
    response = await _post(raw, {"contents": [{"parts": [{"text": "hi"}]}]}, headers={})
    assert response.status_code == 403
    error = response.json()["error"]
    assert error["status"] == "PERMISSION_DENIED" and error["code"] == 403
    assert "unregistered callers" in error["message"]

    by_query = await raw.post(
        "/v1/models/sim:generateContent?key=k", json={"contents": [{"parts": [{"text": "hi"}]}]}
    )
    assert by_query.status_code == 200


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "contents is not specified"),
        ({"contents": []}, "contents is not specified"),
        ({"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]}, "valid role"),
        ({"contents": [{"parts": []}]}, "parts must not be empty"),
        ({"contents": [{"parts": [{}]}]}, "required oneof field 'data'"),
        ({"contents": [{"parts": [{"text": "a", "inlineData": {}}]}]}, "already set"),
        ({"contents": [{"parts": [{"txt": "a"}]}]}, 'Unknown name "txt"'),
        ({"contents": [{"parts": [{"text": "a"}]}], "max_tokens": 3}, 'Unknown name "max_tokens"'),
        (
            {
                "contents": [
                    {"role": "model", "parts": [{"functionCall": {"name": "f"}}] * 2},
                    {"parts": [{"functionResponse": {"name": "f", "response": {}}}]},
                ]
            },
            "number of function response parts",
        ),
    ],
)
async def test_invalid_requests(raw: httpx.AsyncClient, body: Any, message: str) -> None:
    response = await _post(raw, body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["status"] == "INVALID_ARGUMENT" and error["code"] == 400
    assert message in error["message"]


async def test_snake_case_fields_are_accepted(raw: httpx.AsyncClient) -> None:
    body = {
        "contents": [{"parts": [{"text": "hi"}]}],
        "generation_config": {"max_output_tokens": 1},
    }
    response = await _post(raw, body)
    assert response.status_code == 200
    assert response.json()["candidates"][0]["finishReason"] == "MAX_TOKENS"


# -- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "code", "status"),
    [
        ("400", 400, "INVALID_ARGUMENT"),
        ("401", 400, "INVALID_ARGUMENT"),
        ("403", 403, "PERMISSION_DENIED"),
        ("404", 404, "NOT_FOUND"),
        ("413", 400, "INVALID_ARGUMENT"),
        ("429", 429, "RESOURCE_EXHAUSTED"),
        ("500", 500, "INTERNAL"),
        ("503", 503, "UNAVAILABLE"),
        ("529", 503, "UNAVAILABLE"),
    ],
)
async def test_error_faults_in_google_shape(sim: Sim, fault: str, code: int, status: str) -> None:
    client = _client(sim, f"fault={fault}")
    kind = errors.ClientError if code < 500 else errors.ServerError
    with pytest.raises(kind) as caught:
        await client.aio.models.generate_content(model="sim", contents=USER)
    assert caught.value.code == code
    assert caught.value.status == status
    assert caught.value.message
    assert sim.app.stats.requests == 1  # the SDK did not retry
    details = caught.value.details["error"].get("details", [])
    if fault == "401":
        assert caught.value.message == "API key not valid. Please pass a valid API key."
        assert details[0]["reason"] == "API_KEY_INVALID"
    if fault == "429":
        retry = [d for d in details if d["@type"].endswith("RetryInfo")]
        assert retry == [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1s"}]
    if code == 503:
        assert caught.value.message == "The model is overloaded. Please try again later."


async def test_malformed_stream_frame(raw: httpx.AsyncClient) -> None:
    wire = await raw.post(
        "/v1beta/models/sim%3Ffault%3Dmalformed:streamGenerateContent?alt=sse",
        headers=KEY,
        json={"contents": [{"parts": [{"text": USER}]}]},
    )
    frames = [f for f in wire.text.split("\r\n\r\n") if f]
    assert frames[2] == "data: {not json"
    assert json.loads(frames[1].removeprefix("data: "))["candidates"]


# -- embeddings ----------------------------------------------------------------------------------


async def test_embed_content_batch_through_sdk(sim: Sim) -> None:
    result = await _client(sim).aio.models.embed_content(
        model="sim",
        contents=["one", "two"],
        config=types.EmbedContentConfig(output_dimensionality=8),
    )
    assert result.embeddings is not None and len(result.embeddings) == 2
    assert all(e.values is not None and len(e.values) == 8 for e in result.embeddings)
    assert result.embeddings[0].values != result.embeddings[1].values
    sent = sim.app.stats.last_request
    assert sent["requests"][0]["model"] == "models/sim"


async def test_embed_content_single(raw: httpx.AsyncClient) -> None:
    response = await raw.post(
        "/v1beta/models/sim:embedContent",
        headers=KEY,
        json={"content": {"parts": [{"text": "one"}]}},
    )
    assert response.status_code == 200
    assert len(response.json()["embedding"]["values"]) == 16

    mismatched = await raw.post(
        "/v1beta/models/sim:batchEmbedContents",
        headers=KEY,
        json={"requests": [{"model": "models/other", "content": {"parts": [{"text": "a"}]}}]},
    )
    assert mismatched.status_code == 400
    assert mismatched.json()["error"]["status"] == "INVALID_ARGUMENT"
