"""``POST /v1/messages``: the official ``anthropic`` SDK, with strict response
validation, against the gateway in front of an OpenAI-format model."""

from __future__ import annotations

import anthropic
import pytest

from tests.stack import Stack

pytestmark = pytest.mark.integration

PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA"
    "60e6kgAAAABJRU5ErkJggg=="
)
WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


@pytest.fixture(scope="module")
def claude(stack: Stack) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=stack.base_url,
        api_key="unused",
        max_retries=0,
        timeout=30,
        _strict_response_validation=True,
    )


def test_message_non_streaming(claude: anthropic.Anthropic) -> None:
    reply = claude.messages.create(
        model="sim", max_tokens=5, messages=[{"role": "user", "content": "hello"}]
    )
    assert reply.type == "message" and reply.role == "assistant"
    assert reply.content[0].type == "text"
    assert reply.content[0].text == "lorem ipsum dolor sit amet "
    assert reply.stop_reason == "max_tokens"
    assert reply.usage.output_tokens == 5 and reply.usage.input_tokens > 0


def test_message_streaming_with_usage(claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(
        model="sim", max_tokens=100, messages=[{"role": "user", "content": "hello"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text.startswith("lorem ipsum") and len(text.split()) == 16
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 16 and final.usage.input_tokens > 0


def test_tool_use_streamed_and_not(claude: anthropic.Anthropic) -> None:
    kwargs = {
        "model": "sim",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "weather in Paris?"}],
        "tools": [WEATHER],
        "tool_choice": {"type": "any"},
    }
    reply = claude.messages.create(**kwargs)  # type: ignore[call-overload]
    assert reply.stop_reason == "tool_use"
    block = reply.content[0]
    assert block.type == "tool_use" and block.name == "get_weather"
    assert block.input == {"city": "x"}
    with claude.messages.stream(**kwargs) as stream:  # type: ignore[arg-type]
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    streamed = final.content[0]
    assert streamed.type == "tool_use" and streamed.input == {"city": "x"}


def test_tool_result_round_trip_and_image_reach_the_model(claude: anthropic.Anthropic) -> None:
    reply = claude.messages.create(
        model="sim-echo",
        max_tokens=200,
        system="be brief",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                    },
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {
                        "type": "tool_use",
                        "id": "toolu_1",
                        "name": "get_weather",
                        "input": {"city": "Paris"},
                    }
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"}],
            },
        ],
        tools=[WEATHER],
    )
    assert reply.content[0].type == "text"
    assert reply.content[0].text == (
        "system:be brief | user:what is this | image:image/png | "
        'call:get_weather({"city":"Paris"}) | result:sunny'
    )


def test_errors_are_anthropic_errors(claude: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as missing:
        claude.messages.create(
            model="no-such-model", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    assert missing.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    with pytest.raises(anthropic.BadRequestError):
        claude.messages.create(
            model="sim", max_tokens=0, messages=[{"role": "user", "content": "x"}]
        )
    with pytest.raises(anthropic.InternalServerError):
        claude.messages.create(
            model="sim-500", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
