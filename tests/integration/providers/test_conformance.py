"""One conformance suite, run through the whole gateway for every provider adapter.

Each provider's deployments point at the simulator speaking that provider's own
wire format, so every case crosses the adapter's translation both ways: the
client speaks OpenAI, the upstream speaks the provider's dialect. The ``-echo``
models answer with the conversation as the simulator understood it, which shows
that system text, images, tool calls and tool results survived the trip.
"""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from tests.integration.providers.conftest import (
    EMBEDDING_PROVIDERS,
    NO_RETRY_AFTER,
    NO_TOOL_CHOICE,
    PROVIDERS,
)

pytestmark = pytest.mark.integration

PNG = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
    "YPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)
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
USER: list[Any] = [{"role": "user", "content": "hello there"}]
# What the gateway answers for each upstream error class, whatever the provider.
ERRORS = {
    "400": (400, "invalid_request_error"),
    "401": (502, "upstream_error"),
    "403": (502, "upstream_error"),
    "404": (502, "upstream_error"),
    "413": (400, "invalid_request_error"),
    "429": (429, "rate_limit_error"),
    "500": (502, "upstream_error"),
    "503": (503, "service_unavailable"),
    "529": (503, "service_unavailable"),
}

by_provider = pytest.mark.parametrize("provider", PROVIDERS)


def tool_model(provider: str) -> str:
    return f"{provider}-tools" if provider in NO_TOOL_CHOICE else provider


@by_provider
def test_plain_text(gateway: openai.OpenAI, provider: str) -> None:
    reply = gateway.chat.completions.create(model=provider, messages=USER)
    choice = reply.choices[0]
    assert choice.message.content == (
        "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor "
        "incididunt ut labore et "
    )
    assert choice.finish_reason == "stop"
    assert reply.usage is not None
    assert reply.usage.completion_tokens == 16 and reply.usage.prompt_tokens > 0


@by_provider
def test_streamed_text_with_usage(gateway: openai.OpenAI, provider: str) -> None:
    chunks = list(
        gateway.chat.completions.create(
            model=provider, messages=USER, stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("lorem ipsum dolor") and len(text.split()) == 16
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop"
    usage = [c.usage for c in chunks if c.usage is not None]
    assert len(usage) == 1 and usage[0].completion_tokens == 16


@by_provider
def test_tool_call_non_streamed(gateway: openai.OpenAI, provider: str) -> None:
    reply = gateway.chat.completions.create(
        model=tool_model(provider), messages=USER, tools=TOOLS, tool_choice="required"
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls or []
    assert len(calls) == 1 and calls[0].type == "function"
    assert calls[0].function.name == "get_weather" and calls[0].id
    assert json.loads(calls[0].function.arguments) == {"city": "x", "days": 1}


@by_provider
def test_tool_call_streamed_arguments(gateway: openai.OpenAI, provider: str) -> None:
    stream = gateway.chat.completions.create(
        model=tool_model(provider),
        messages=USER,
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        stream=True,
    )
    name, ids, arguments, finish = "", set(), "", None
    for chunk in stream:
        for choice in chunk.choices:
            for call in choice.delta.tool_calls or []:
                assert call.index == 0
                name += call.function.name or "" if call.function else ""
                ids.add(call.id) if call.id else None
                arguments += (call.function.arguments or "") if call.function else ""
            finish = choice.finish_reason or finish
    assert name == "get_weather" and len(ids) == 1
    assert json.loads(arguments) == {"city": "x", "days": 1}
    assert finish == "tool_calls"


@by_provider
def test_tool_result_round_trip_and_image(gateway: openai.OpenAI, provider: str) -> None:
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
    reply = gateway.chat.completions.create(
        model=f"{provider}-echo", messages=messages, tools=TOOLS
    )
    assert reply.choices[0].message.content == (
        "system:be brief | user:what is this | image:image/png | "
        'call:get_weather({"city":"Paris"}) | result:sunny'
    )


@by_provider
def test_stop_sequence(gateway: openai.OpenAI, provider: str) -> None:
    reply = gateway.chat.completions.create(model=provider, messages=USER, stop=["dolor"])
    assert reply.choices[0].message.content == "lorem ipsum "
    assert reply.choices[0].finish_reason == "stop"


@by_provider
def test_max_tokens_gives_length(gateway: openai.OpenAI, provider: str) -> None:
    reply = gateway.chat.completions.create(model=provider, messages=USER, max_tokens=3)
    assert reply.choices[0].message.content == "lorem ipsum dolor "
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None and reply.usage.completion_tokens == 3


@by_provider
def test_cut_stream_is_an_error_not_a_finish(gateway: openai.OpenAI, provider: str) -> None:
    stream = gateway.chat.completions.create(model=f"{provider}-cut", messages=USER, stream=True)
    finishes: list[str | None] = []

    def drain() -> None:
        for chunk in stream:
            finishes.extend(c.finish_reason for c in chunk.choices)

    with pytest.raises(openai.APIError):
        drain()
    assert not any(finishes)


@pytest.mark.parametrize("fault", list(ERRORS))
@by_provider
def test_upstream_errors_map_to_one_status_each(
    gateway: openai.OpenAI, provider: str, fault: str
) -> None:
    status, kind = ERRORS[fault]
    with pytest.raises(openai.APIStatusError) as caught:
        gateway.chat.completions.create(model=f"{provider}-e{fault}", messages=USER)
    error = caught.value
    assert error.status_code == status, error.message
    body: Any = error.body
    assert body["type"] == kind, body
    if fault == "429" and provider not in NO_RETRY_AFTER:
        assert error.response.headers.get("retry-after") == "3"


@pytest.mark.parametrize("provider", EMBEDDING_PROVIDERS)
def test_embeddings(gateway: openai.OpenAI, provider: str) -> None:
    reply = gateway.embeddings.create(
        model=provider, input=["first text", "second text"], encoding_format="float"
    )
    assert [d.index for d in reply.data] == [0, 1]
    first, second = reply.data[0].embedding, reply.data[1].embedding
    assert len(first) == len(second) > 0 and first != second
    assert reply.usage.prompt_tokens > 0


def test_anthropic_has_no_embeddings(gateway: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError):
        gateway.embeddings.create(model="anthropic", input="x")


@by_provider
def test_context_window_errors_are_recognised(gateway: openai.OpenAI, provider: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        gateway.chat.completions.create(model=f"{provider}-ectx", messages=USER)
    assert caught.value.body["code"] == "context_length_exceeded"  # type: ignore[index]
