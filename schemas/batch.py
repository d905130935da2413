"""Batches: OpenAI Batch API input (one request per line of a ``purpose=batch``
file) and its per-line errors, the Batch object, the output line format, and
the submission message of the ``igw.batch.submit`` queue subject."""

from __future__ import annotations

import re
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


BatchStatus = Literal[
    "validating",
    "failed",
    "in_progress",
    "finalizing",
    "completed",
    "expired",
    "cancelling",
    "cancelled",
]
FINISHED: Final[frozenset[str]] = frozenset({"failed", "completed", "expired", "cancelled"})
BATCH_ID: Final = re.compile(r"^batch_[A-Za-z0-9_-]{1,120}$")


class RequestCounts(BaseModel):
    total: int = 0
    completed: int = 0
    failed: int = 0


class BatchErrors(BaseModel):
    object: Literal["list"] = "list"
    data: list[BatchError] = Field(default_factory=list)


class BatchObject(BaseModel):
    """OpenAI's Batch object, as ``/v1/batches`` returns it and status events carry it."""

    model_config = ConfigDict(extra="ignore")

    id: str
    object: Literal["batch"] = "batch"
    endpoint: BatchEndpoint = "/v1/chat/completions"
    errors: BatchErrors | None = None
    input_file_id: str | None = None
    completion_window: str = "24h"
    status: BatchStatus = "validating"
    output_file_id: str | None = None
    error_file_id: str | None = None
    created_at: int
    in_progress_at: int | None = None
    expires_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    request_counts: RequestCounts = Field(default_factory=RequestCounts)
    metadata: dict[str, str] | None = None


class BatchSubmission(BaseModel):
    """A batch job published on ``igw.batch.submit`` (JetStream, ``Nats-Msg-Id`` = the
    batch id, so a repeated publish is stored once). Follow it on
    ``igw.batch.status.<batch_id>`` (a ``BatchObject`` per change) and
    ``igw.batch.results.<batch_id>`` (a ``BatchResultLine`` per request).

    Give either ``items`` (inline requests) or ``input_file_id`` (an uploaded
    ``purpose=batch`` file). ``key`` is the virtual key the batch runs and is
    billed under (required when the gateway has a master key); the gateway's
    own HTTP API, which has checked the key already, sends its ``key_id``
    (the key's token) instead, so the key itself is never stored."""

    model_config = ConfigDict(extra="ignore")

    schema_version: int = 1
    batch_id: str = Field(pattern=BATCH_ID.pattern)
    key: str | None = None
    key_id: str | None = None
    admin: bool = Field(False, description="set by the gateway's HTTP API for the master key")
    endpoint: BatchEndpoint = "/v1/chat/completions"
    completion_window: str = "24h"
    metadata: dict[str, str] | None = None
    items: list[BatchRequestLine] | None = None
    input_file_id: str | None = None


class BatchResponse(BaseModel):
    status_code: int
    request_id: str
    body: dict[str, Any]


class BatchLineError(BaseModel):
    code: str
    message: str


class BatchResultLine(BaseModel):
    """One line of a batch's output (or error) file, in OpenAI's format."""

    id: str
    custom_id: str
    response: BatchResponse | None = None
    error: BatchLineError | None = None

    @property
    def succeeded(self) -> bool:
        return self.response is not None and 200 <= self.response.status_code < 300


def state_key(batch_id: str) -> str:
    """``batch.<id>`` in ``igw_batches``: the ``BatchState`` of a batch the runner took."""
    return f"batch.{batch_id}"


def pending_key(batch_id: str) -> str:
    """``pending.<id>``: a batch created over HTTP that the runner has not taken yet."""
    return f"pending.{batch_id}"


class BatchState(BaseModel):
    """A batch in the ``igw_batches`` KV bucket: the public Batch object plus what
    the runner needs to resume after a restart (who it runs as, how far it has
    dispatched, and a bit per item already counted, so a redelivered reply is
    never counted twice). Nothing about a batch lives only in a process."""

    batch: BatchObject | None = None
    key_id: str | None = None
    tenant: str | None = None
    user_id: str | None = None
    dispatched: int = Field(0, description="items 0..dispatched-1 have been published")
    done_bits: str = Field("", description="base64 bitset: item n has been counted")

    @property
    def finished(self) -> bool:
        return self.batch is not None and self.batch.status in FINISHED

    @property
    def answered(self) -> int:
        assert self.batch is not None
        counts = self.batch.request_counts
        return counts.completed + counts.failed

    @property
    def in_flight(self) -> int:
        return self.dispatched - self.answered
