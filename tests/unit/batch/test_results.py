"""Batch item outcomes: output lines in OpenAI's format, and each item counted once."""

from __future__ import annotations

import orjson

from schemas.batch import BatchObject, BatchState
from schemas.bus import ErrorInfo, ReplyMeta
from services.batch.results import answered, is_done, result_line


def meta(**extra: object) -> ReplyMeta:
    return ReplyMeta(
        kind="terminal", request_id="batch_x-3", attempt=1, seq=0, provider="p", deployment="d",
        **extra,
    )  # fmt: skip


def test_an_answer_becomes_an_output_line() -> None:
    line = result_line(meta(), orjson.dumps({"object": "chat.completion"}), "req-3")
    assert line.succeeded and line.id == "batch_req_batch_x-3" and line.custom_id == "req-3"
    assert line.response is not None and line.response.body == {"object": "chat.completion"}


def test_an_error_becomes_an_error_line_with_its_status() -> None:
    error = ErrorInfo(status=502, type="upstream_error", message="boom", code="upstream_error")
    line = result_line(meta(error=error), b"", "req-3")
    assert not line.succeeded and line.response is not None
    assert line.response.status_code == 502
    assert line.response.body["error"]["code"] == "upstream_error"
    broken = result_line(meta(), b"not json", "req-3")
    assert not broken.succeeded and broken.error is not None


def test_each_item_counts_once_however_often_its_reply_comes() -> None:
    state = BatchState(batch=BatchObject(id="batch_x", created_at=0, status="in_progress"))
    for _ in range(3):
        answered(9, succeeded=True)(state)
    answered(2, succeeded=False)(state)
    assert state.batch is not None
    counts = state.batch.request_counts
    assert (counts.completed, counts.failed) == (1, 1)
    assert is_done(state, 9) and is_done(state, 2) and not is_done(state, 3)
