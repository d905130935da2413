"""The Anthropic-compatible ingress: request and answer translation rules."""

from __future__ import annotations

import orjson

from schemas.anthropic_messages import MessagesRequest
from schemas.bus import ErrorInfo
from services.ingress.anthropic_request import to_openai
from services.ingress.anthropic_response import StreamTranslator, to_message


def _events(raw: bytes) -> list[tuple[str, dict[str, object]]]:
    out = []
    for frame in raw.decode().strip().split("\n\n"):
        event, data = frame.split("\n", 1)
        out.append((event.removeprefix("event: "), orjson.loads(data.removeprefix("data: "))))
    return out


def test_request_rules() -> None:
    request = MessagesRequest.model_validate(
        {
            "model": "m",
            "max_tokens": 10,
            "system": [{"type": "text", "text": "be brief"}],
            "stop_sequences": ["END"],
            "top_k": 5,
            "metadata": {"user_id": "u1"},
            "tools": [{"name": "f", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
            "stream": True,
            "messages": [
                {"role": "user", "content": "hi"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "hmm", "signature": "s"},
                        {"type": "text", "text": "calling"},
                        {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "and this"},
                        {"type": "tool_result", "tool_use_id": "t1", "content": "42"},
                        {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}},
                    ],
                },
            ],
        }
    )
    body = to_openai(request)
    assert body["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
        {
            "role": "assistant",
            "content": "calling",
            "tool_calls": [
                {"id": "t1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "t1", "content": "42"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "and this"},
                {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
            ],
        },
    ]
    assert body["stop"] == ["END"] and body["user"] == "u1" and "top_k" not in body
    assert body["tool_choice"] == "required" and body["parallel_tool_calls"] is False
    assert body["tools"][0]["function"] == {"name": "f", "parameters": {"type": "object"}}
    assert body["stream_options"] == {"include_usage": True}


def test_completion_becomes_a_message() -> None:
    completion = {
        "choices": [
            {
                "finish_reason": "tool_calls",
                "message": {
                    "content": "ok",
                    "tool_calls": [
                        {"id": "c1", "function": {"name": "f", "arguments": '{"x": 2}'}}
                    ],
                },
            }
        ],
        "usage": {
            "prompt_tokens": 10,
            "completion_tokens": 3,
            "prompt_tokens_details": {"cached_tokens": 4},
        },
    }
    message = to_message(completion, "alias", "req_abc")
    assert message["id"] == "msg_abc" and message["model"] == "alias"
    assert message["content"] == [
        {"type": "text", "text": "ok"},
        {"type": "tool_use", "id": "c1", "name": "f", "input": {"x": 2}},
    ]
    assert message["stop_reason"] == "tool_use"
    assert message["usage"] == {
        "input_tokens": 6,
        "output_tokens": 3,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 4,
    }


def _chunk(delta: dict[str, object], finish: str | None = None) -> bytes:
    return orjson.dumps({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})


def test_stream_event_sequence_with_text_then_tool_call() -> None:
    t = StreamTranslator("alias", "req_1")
    raw = b"".join(
        [
            t.chunk(_chunk({"role": "assistant", "content": ""})),
            t.chunk(_chunk({"content": "Let me "})),
            t.chunk(_chunk({"content": "check."})),
            t.chunk(
                _chunk(
                    {
                        "tool_calls": [
                            {"index": 0, "id": "c1", "function": {"name": "f", "arguments": ""}}
                        ]
                    }
                )
            ),
            t.chunk(_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a"'}}]})),
            t.chunk(_chunk({"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]})),
            t.chunk(_chunk({}, "tool_calls")),
            t.done({"prompt_tokens": 5, "completion_tokens": 7}),
        ]
    )
    events = _events(raw)
    assert [e for e, _ in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert events[5][1]["content_block"] == {
        "type": "tool_use",
        "id": "c1",
        "name": "f",
        "input": {},
    }
    assert events[6][1]["delta"] == {"type": "input_json_delta", "partial_json": '{"a"'}
    assert events[9][1]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert events[9][1]["usage"]["output_tokens"] == 7  # type: ignore[index]


def test_stream_error_event() -> None:
    info = ErrorInfo(status=503, type="service_unavailable", message="busy")
    [(event, data)] = _events(StreamTranslator("m", "req_1").error(info))
    assert event == "error"
    assert data == {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}
