"""OpenAI Batch API input: one request per line of a ``purpose=batch`` file, and
the per-line error object (``batch.errors.data[]``)."""

from __future__ import annotations

from typing import Any, Final, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

BatchEndpoint = Literal["/v1/chat/completions", "/v1/embeddings"]
BATCH_ENDPOINTS: Final[tuple[str, ...]] = get_args(BatchEndpoint)


class BatchRequestLine(BaseModel):
    """``{"custom_id", "method": "POST", "url", "body"}``; other keys are ignored."""

    model_config = ConfigDict(extra="ignore")

    custom_id: str = Field(min_length=1)
    method: Literal["POST"]
    url: BatchEndpoint
    body: dict[str, Any]


class BatchError(BaseModel):
    """One problem with a batch input file; ``line`` is 1-based, None for the whole file."""

    code: str
    message: str
    param: str | None = None
    line: int | None = None
