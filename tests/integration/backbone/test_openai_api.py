"""The OpenAI-compatible surface, driven by the official SDK with strict
response validation, through real NATS and every IGW service."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.stack import Stack

pytestmark = pytest.mark.integration

HELLO = [{"role": "user", "content": "Say hello"}]


def test_non_streaming_completion(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="sim", messages=HELLO)
    completion = raw.parse()
    assert completion.choices[0].message.content
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 16
    assert completion.usage.total_tokens == (
        completion.usage.prompt_tokens + completion.usage.completion_tokens
    )
    assert raw.headers["x-request-id"].startswith("req_")
    assert raw.headers["x-igw-provider"] == "openai"
    assert raw.headers["x-igw-deployment"] == "sim"


def test_streaming_reassembles_text_without_usage_by_default(client: openai.OpenAI) -> None:
    whole = client.chat.completions.create(model="sim", messages=HELLO)
    chunks = list(client.chat.completions.create(model="sim", messages=HELLO, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks)


def test_stream_usage_chunk_when_asked(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="sim", messages=HELLO, stream=True, stream_options={"include_usage": True}
        )
    )
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.completion_tokens == 16
    assert all(c.usage is None for c in chunks[:-1])


def test_max_tokens_gives_length(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="sim", messages=HELLO, max_tokens=3)
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 3


def test_models_list(client: openai.OpenAI) -> None:
    ids = {m.id for m in client.models.list()}
    assert {"sim", "sim-slow", "sim-500"} <= ids


def test_unknown_model_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="no-such-model", messages=HELLO)
    assert info.value.code == "model_not_found"
    assert "no-such-model" in info.value.message


def test_unknown_fields_are_accepted_and_connection_fields_never_forwarded(
    client: openai.OpenAI, stack: Stack
) -> None:
    completion = client.chat.completions.create(
        model="sim",
        messages=HELLO,
        extra_body={"api_base": "http://evil.example", "api_key": "sk-client", "novel_param": 1},
    )
    assert completion.choices[0].message.content
    forwarded = stack.sim_stats()["last_request"]
    assert "api_base" not in forwarded
    assert "api_key" not in forwarded
    assert forwarded["novel_param"] == 1
    assert forwarded["model"] == "sim"


def test_malformed_json_is_400(stack: Stack) -> None:
    resp = httpx.post(
        f"{stack.base_url}/v1/chat/completions",
        content=b'{"model": "sim", "messages": [',
        headers={"content-type": "application/json"},
    )
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "invalid_json"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "sim"}, "messages"),
        ({"model": "sim", "messages": []}, "messages"),
        ({"model": "sim", "messages": [{"role": "wizard", "content": "x"}]}, "messages[0]"),
        ({"model": "sim", "messages": HELLO, "temperature": "hot"}, "temperature"),
        ({"messages": HELLO}, "model"),
    ],
)
def test_schema_errors_are_400_naming_the_field(
    stack: Stack, body: dict[str, object], param: str
) -> None:
    resp = httpx.post(f"{stack.base_url}/v1/chat/completions", json=body)
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"].startswith(param)


def test_invalid_utf8_is_400(stack: Stack) -> None:
    resp = httpx.post(
        f"{stack.base_url}/v1/chat/completions",
        content=b'{"model": "sim", "messages": [{"role": "user", "content": "\xff\xfe"}]}',
        headers={"content-type": "application/json"},
    )
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == "invalid_json"


def test_oversized_body_is_413(stack: Stack) -> None:
    huge = "x" * 70_000
    resp = httpx.post(
        f"{stack.base_url}/v1/chat/completions",
        json={"model": "sim", "messages": [{"role": "user", "content": huge}]},
    )
    assert resp.status_code == 413
    assert resp.json()["error"]["code"] == "request_too_large"


def test_unknown_route_is_openai_style_404(stack: Stack) -> None:
    resp = httpx.get(f"{stack.base_url}/v1/nothing-here")
    assert resp.status_code == 404
    assert resp.json()["error"]["type"] == "invalid_request_error"


def test_health_and_ready(stack: Stack) -> None:
    assert httpx.get(f"{stack.base_url}/health").json()["status"] == "ok"
    ready = httpx.get(f"{stack.base_url}/ready")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"nats_connected": True, "streams": True}
