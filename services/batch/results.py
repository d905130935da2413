"""A batch item's outcome as an output line, and the changes it makes to the
batch state (pure functions, applied by compare-and-set)."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import orjson

from schemas.batch import (
    BatchLineError,
    BatchRequestLine,
    BatchResponse,
    BatchResultLine,
    BatchState,
)
from schemas.bus import ReplyMeta
from services.runtime.errors import GatewayError


def result_line(meta: ReplyMeta, payload: bytes, custom_id: str) -> BatchResultLine:
    """A worker's terminal event as an output (or error) line."""
    line_id = f"batch_req_{meta.request_id}"
    if meta.error is not None:
        body = {"error": {"message": meta.error.message, "type": meta.error.type,
                          "param": meta.error.param, "code": meta.error.code}}  # fmt: skip
        response = BatchResponse(
            status_code=meta.error.status, request_id=meta.request_id, body=body
        )
        return BatchResultLine(id=line_id, custom_id=custom_id, response=response)
    try:
        answer: dict[str, Any] = orjson.loads(payload)
    except orjson.JSONDecodeError:
        error = BatchLineError(code="upstream_protocol_error", message="the answer was not JSON")
        return BatchResultLine(id=line_id, custom_id=custom_id, error=error)
    response = BatchResponse(status_code=200, request_id=meta.request_id, body=answer)
    return BatchResultLine(id=line_id, custom_id=custom_id, response=response)


def refusal_line(request_id: str, item: BatchRequestLine, exc: GatewayError) -> BatchResultLine:
    info = exc.to_info()
    body = {"error": {"message": info.message, "type": info.type, "param": info.param,
                      "code": info.code}}  # fmt: skip
    response = BatchResponse(status_code=info.status, request_id=request_id, body=body)
    return BatchResultLine(
        id=f"batch_req_{request_id}", custom_id=item.custom_id, response=response
    )


def is_done(state: BatchState, index: int) -> bool:
    bits = base64.b64decode(state.done_bits) if state.done_bits else b""
    return index // 8 < len(bits) and bool(bits[index // 8] & (1 << (index % 8)))


def answered(index: int, succeeded: bool) -> Callable[[BatchState], None]:
    def edit(state: BatchState) -> None:
        if state.batch is None or state.finished or is_done(state, index):
            return  # counted already (a redelivered reply), or too late to count
        bits = bytearray(base64.b64decode(state.done_bits) if state.done_bits else b"")
        if len(bits) <= index // 8:
            bits.extend(b"\0" * (index // 8 + 1 - len(bits)))
        bits[index // 8] |= 1 << (index % 8)
        state.done_bits = base64.b64encode(bytes(bits)).decode()
        counts = state.batch.request_counts
        if succeeded:
            counts.completed += 1
        else:
            counts.failed += 1

    return edit


def dispatched_to(end: int) -> Callable[[BatchState], None]:
    def edit(state: BatchState) -> None:
        state.dispatched = max(state.dispatched, end)

    return edit


def compact(batch_id: str) -> str:
    return "".join(c for c in batch_id.removeprefix("batch_") if c.isalnum())[:60]
