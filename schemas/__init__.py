"""IGW message and API models. This package imports nothing from the services."""

from schemas.bus import (
    SCHEMA_VERSION,
    Cancel,
    ErrorInfo,
    InferenceRequest,
    ReplyMeta,
    RouteDecision,
    RoutingView,
    SqlQuery,
    SqlResult,
    UsageEvent,
    WorkItem,
    work_item_json,
)
from schemas.errors import ErrorDetail, ErrorResponse
from schemas.openai_chat import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ModelCard,
    ModelList,
    Usage,
)

__all__ = [
    "SCHEMA_VERSION",
    "Cancel",
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatCompletionRequest",
    "ErrorDetail",
    "ErrorInfo",
    "ErrorResponse",
    "InferenceRequest",
    "ModelCard",
    "ModelList",
    "ReplyMeta",
    "RouteDecision",
    "RoutingView",
    "SqlQuery",
    "SqlResult",
    "Usage",
    "UsageEvent",
    "WorkItem",
    "work_item_json",
]
