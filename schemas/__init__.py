"""IGW message and API models. This package imports nothing from the services."""

from schemas.bus import (
    REPLY_EVENT,
    SCHEMA_VERSION,
    Cancel,
    ErrorInfo,
    InferenceRequest,
    RouteDecision,
    SqlQuery,
    SqlResult,
    Terminal,
    TokenChunk,
    UsageEvent,
    WorkItem,
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
    "REPLY_EVENT",
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
    "RouteDecision",
    "SqlQuery",
    "SqlResult",
    "Terminal",
    "TokenChunk",
    "Usage",
    "UsageEvent",
    "WorkItem",
]
