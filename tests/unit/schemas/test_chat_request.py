from __future__ import annotations

import pytest
from pydantic import ValidationError

from schemas import ChatCompletionRequest

FULL = {
    "model": "sim",
    "messages": [
        {"role": "system", "content": "be brief"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
    ],
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
    "tool_choice": {"type": "function", "function": {"name": "f"}},
    "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}},
    "stop": ["END"],
    "temperature": 0.3,
    "top_p": 0.9,
    "max_tokens": 10,
    "max_completion_tokens": 12,
    "seed": 7,
    "user": "u1",
    "stream": True,
    "stream_options": {"include_usage": True},
    "metadata": {"feature": "chat"},
}


def test_full_request_validates() -> None:
    req = ChatCompletionRequest.model_validate(FULL)
    assert req.wants_stream
    assert req.wants_stream_usage
    assert req.output_token_limit == 12
    assert len(req.messages) == 4


def test_unknown_fields_are_kept_not_fatal() -> None:
    req = ChatCompletionRequest.model_validate({**FULL, "brand_new_param": {"a": 1}})
    assert req.model_extra == {"brand_new_param": {"a": 1}}


@pytest.mark.parametrize(
    "patch",
    [
        {"messages": []},
        {"messages": [{"role": "user"}]},
        {"messages": [{"role": "user", "content": [{"type": "video", "url": "x"}]}]},
        {"temperature": 3},
        {"max_tokens": 0},
        {"tool_choice": "sometimes"},
        {"model": ""},
    ],
)
def test_invalid_requests_are_rejected(patch: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        ChatCompletionRequest.model_validate({**FULL, **patch})


def test_work_item_wraps_request_bytes_without_reencoding() -> None:
    import time

    from schemas import InferenceRequest, RouteDecision, RoutingView, WorkItem, work_item_json

    request = InferenceRequest(
        request_id="req_9",
        created_at=time.time(),
        deadline=time.time() + 5,
        model="sim",
        reply_subject="igw.chunks.i.req_9",
        body={"model": "sim", "messages": [{"role": "user", "content": "héllo"}], "x": [1, 2]},
    )
    raw = request.model_dump_json().encode()
    view = RoutingView.model_validate_json(raw)
    assert (view.request_id, view.model, view.attempt) == ("req_9", "sim", 1)
    route = RouteDecision(
        provider="openai", deployment="d", upstream_model="u", subject="igw.work.openai.d"
    )
    item = WorkItem.model_validate_json(work_item_json(route, raw))
    assert item.request == request
    assert item.route == route
