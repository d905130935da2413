"""Upstream 400s are named for what they are, whatever the provider's wording."""

from __future__ import annotations

import pytest

from services.runtime.errors import (
    ContentFiltered,
    ContextWindowExceeded,
    UpstreamBadRequest,
    UpstreamError,
)
from services.workers.upstream_errors import refine


@pytest.mark.parametrize(
    "message",
    [
        "This model's maximum context length is 128000 tokens. However, your messages resulted "
        "in 130000 tokens.",
        "prompt is too long: 210000 tokens > 200000 maximum",
        "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).",
        "Input is too long for requested model.",
    ],
)
def test_context_window_errors(message: str) -> None:
    refined = refine(UpstreamBadRequest(f"deployment d answered 400: {message}"))
    assert isinstance(refined, ContextWindowExceeded)
    assert refined.status == 400 and refined.fallback and not refined.retryable
    assert refined.to_info().code == "context_length_exceeded"


def test_content_policy_errors() -> None:
    message = (
        "The response was filtered due to the prompt triggering Azure OpenAI's content "
        "management policy."
    )
    refined = refine(UpstreamBadRequest(message))
    assert isinstance(refined, ContentFiltered) and refined.fallback


def test_other_errors_are_left_alone() -> None:
    plain = UpstreamBadRequest("temperature must be at most 2")
    assert refine(plain) is plain
    server = UpstreamError("maximum context length")  # not a 400: not reclassified
    assert refine(server) is server
