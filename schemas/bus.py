"""Messages on the bus. Every one carries ``schema_version``.

Flow of one request::

    ingress --InferenceRequest--> IGW_REQUESTS --> router
    router  --WorkItem----------> IGW_WORK     --> worker (provider adapter)
    worker  --reply events (ReplyMeta header + OpenAI JSON payload)
            -------------------> core NATS reply subject --> ingress
    worker  --UsageEvent--------> IGW_USAGE    --> accounting --> ClickHouse
    ingress --Cancel------------> core NATS cancel subject --> worker

Consumers must tolerate fields they do not know (a newer producer), so every
model ignores extra fields.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.openai_chat import Usage
from schemas.subjects import Priority

SCHEMA_VERSION: Final = 1


class BusMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    schema_version: int = SCHEMA_VERSION


class ErrorInfo(BaseModel):
    """A gateway error as it travels on the bus; the ingress turns it into HTTP."""

    model_config = ConfigDict(extra="ignore")

    status: int
    type: str
    message: str
    code: str | None = None
    param: str | None = None
    retryable: bool = False
    retry_after: float | None = None
    fallback: bool = False


class Needs(BaseModel):
    """What a request needs of a deployment, so routing only picks ones that can serve it."""

    model_config = ConfigDict(extra="ignore")

    tools: bool = False
    vision: bool = False
    context_tokens: int = Field(0, description="estimated prompt plus requested output tokens")


Operation = Literal["chat", "embeddings"]
"""What a request asks of the upstream: a chat completion or embeddings."""


class InferenceRequest(BusMessage):
    """An accepted client request, published by the ingress."""

    request_id: str
    created_at: float = Field(description="epoch seconds when the ingress accepted it")
    deadline: float = Field(description="epoch seconds after which nobody waits for it")
    priority: Priority = "interactive"
    attempt: int = 1
    key_id: str | None = None
    tenant: str | None = None
    user_id: str | None = None
    model: str = Field(description="the gateway alias the client asked for")
    operation: Operation = "chat"
    stream: bool = False
    include_usage: bool = False
    reply_subject: str = Field(description="core NATS subject for chunks and the terminal event")
    tried: list[str] = Field(
        default_factory=list, description="deployments of earlier attempts, in order"
    )
    last_error: ErrorInfo | None = Field(None, description="why the previous attempt failed")
    pin_provider: str | None = Field(None, description="x-gateway provider: bypass routing")
    needs: Needs = Field(default_factory=Needs)
    hedge: bool = Field(False, description="a hedge beside a slow attempt, not a retry")
    metadata: dict[str, str] | None = Field(None, description="x-gateway metadata")
    batch_id: str | None = Field(None, description="the batch this request is an item of")
    budget_lease: str | None = Field(
        None, description="the key's budget lease this request was admitted from, if any"
    )
    budget_lease_hold: float = Field(0.0, description="what it took from that lease, USD")
    cache: bool | None = Field(None, description="x-gateway cache flag")
    body: dict[str, Any] = Field(
        description="the validated OpenAI request body: chat completions, or embeddings"
    )


class RoutingView(BusMessage):
    """The fields of an ``InferenceRequest`` the router reads; the body stays opaque."""

    request_id: str
    model: str
    attempt: int = 1
    priority: Priority = "interactive"
    reply_subject: str
    created_at: float = 0.0
    deadline: float = 0.0
    tried: list[str] = Field(default_factory=list)
    last_error: ErrorInfo | None = None
    pin_provider: str | None = None
    needs: Needs = Field(default_factory=Needs)
    hedge: bool = False
    key_id: str | None = None
    tenant: str | None = None
    user_id: str | None = None
    stream: bool = False
    batch_id: str | None = None
    budget_lease: str | None = None
    budget_lease_hold: float = 0.0


class RouteDecision(BaseModel):
    model_config = ConfigDict(extra="ignore")

    provider: str
    deployment: str
    upstream_model: str
    subject: str
    attempt: int = 1
    reason: str = "alias"
    hedge_after_s: float | None = None


class WorkItem(BusMessage):
    """One routed attempt of a request, for the provider's workers."""

    route: RouteDecision
    request: InferenceRequest


def work_item_json(route: RouteDecision, request_json: bytes) -> bytes:
    """A ``WorkItem`` around an already serialized request, without re-encoding it."""
    return b"".join(
        (
            b'{"schema_version":',
            str(SCHEMA_VERSION).encode(),
            b',"route":',
            route.model_dump_json().encode(),
            b',"request":',
            request_json,
            b"}",
        )
    )


ReplyKind = Literal["chunk", "terminal"]


class ReplyMeta(BusMessage):
    """The header of one reply event on a request's reply subject.

    A reply event is a core NATS message whose ``Igw-Reply`` header holds this
    model as JSON and whose payload is an OpenAI object, passed to the client
    as is: a ``chat.completion.chunk`` for ``kind="chunk"``; for
    ``kind="terminal"`` the whole ``chat.completion`` of a non-streaming
    request, or nothing at the end of a stream or on error.
    """

    kind: ReplyKind
    request_id: str
    attempt: int
    delivery: int = Field(1, description="JetStream delivery count of the work message")
    seq: int = Field(description="0, 1, 2 ... within one delivery of one attempt")
    provider: str
    deployment: str
    finish_reason: str | None = None
    usage: Usage | None = Field(None, description="on a terminal event: what the attempt used")
    error: ErrorInfo | None = None


UsageStatus = Literal["ok", "error", "cancelled"]


class UsageEvent(BusMessage):
    """What one attempt consumed. Exactly one per (request_id, attempt)."""

    request_id: str
    attempt: int
    ts: float = Field(description="epoch seconds when the attempt started")
    key_id: str | None = None
    tenant: str | None = None
    user_id: str | None = None
    model: str
    provider: str
    deployment: str
    upstream_model: str
    priority: Priority = "interactive"
    stream: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    usage_estimated: bool = False
    cost_usd: Decimal = Decimal(0)
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    status: UsageStatus = "ok"
    error_type: str | None = None
    http_status: int = 200
    finish_reason: str | None = None
    final: bool = Field(
        True, description="False when another attempt of the request follows this one"
    )
    cache_hit: bool = Field(False, description="answered from the response cache")
    batch_id: str | None = None
    budget_lease: str | None = Field(
        None, description="on a final event: the key's budget lease to give the hold back to"
    )
    budget_lease_hold: float = 0.0


class Cancel(BusMessage):
    """The client went away or the deadline passed: stop the upstream call."""

    request_id: str
    reason: str = "client_disconnected"
    keep_attempt: int | None = Field(
        None, description="stop every attempt but this one (a hedge race was decided)"
    )


class SqlQuery(BusMessage):
    """A read-only analyst query, answered by the accounting service."""

    sql: str
    max_rows: int = 10_000
    timeout_s: float = 30.0


class SqlResult(BusMessage):
    columns: list[str] = Field(default_factory=list)
    types: list[str] = Field(default_factory=list)
    rows: list[list[Any]] = Field(default_factory=list)
    truncated: bool = False
    elapsed_ms: float = 0.0
    error: str | None = None


class BreakerRecord(BusMessage):
    """The shared circuit-breaker state of one deployment (KV ``igw_health``)."""

    state: Literal["closed", "open", "probing"]
    at: float = Field(description="epoch seconds of the transition")
    by: str = Field("", description="the router replica that wrote it")


class DeploymentStatus(BaseModel):
    """One row of ``GET /api/v1/providers/status``."""

    alias: str
    provider: str
    deployment: str
    state: Literal["closed", "open", "half_open"]
    error_rate: float
    recent_calls: int
    p50_ms: float | None
    p95_ms: float | None
    ttft_ms: float | None
    in_flight: int
    queued: int
