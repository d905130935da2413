"""The provider-call span of one attempt, after OpenTelemetry's GenAI semantic
conventions (still in development, so every name they define is kept here).

The span is named ``{gen_ai.operation.name} {gen_ai.request.model}`` (``chat
gpt-4o``), kind CLIENT, a child of the trace context carried on the work
message; ``record`` adds what the attempt returned once its usage is known.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Final

from opentelemetry.trace import Span, SpanKind, StatusCode

from schemas.bus import UsageEvent, WorkItem
from services.runtime import tracing
from services.workers.attempt import Progress

OPERATION_NAME: Final = "gen_ai.operation.name"
PROVIDER_NAME: Final = "gen_ai.provider.name"
REQUEST_MODEL: Final = "gen_ai.request.model"
REQUEST_STREAM: Final = "gen_ai.request.stream"
RESPONSE_MODEL: Final = "gen_ai.response.model"
RESPONSE_ID: Final = "gen_ai.response.id"
RESPONSE_FINISH_REASONS: Final = "gen_ai.response.finish_reasons"
USAGE_INPUT_TOKENS: Final = "gen_ai.usage.input_tokens"
USAGE_OUTPUT_TOKENS: Final = "gen_ai.usage.output_tokens"
USAGE_CACHE_READ_INPUT_TOKENS: Final = "gen_ai.usage.cache_read.input_tokens"
ERROR_TYPE: Final = "error.type"

PROVIDERS: Final = {
    "openai": "openai",
    "azure": "azure.ai.openai",
    "anthropic": "anthropic",
    "bedrock": "aws.bedrock",
    "gemini": "gcp.gemini",
    "ollama": "ollama",
}
"""IGW's adapter names as the conventions' well-known ``gen_ai.provider.name`` values."""


def call_span(
    item: WorkItem, headers: Mapping[str, str] | None
) -> contextlib.AbstractContextManager[Span]:
    """The attempt's span, current inside the ``with`` (a no-op when tracing is off)."""
    if not tracing.ENABLED:
        return tracing.NOOP
    req, route = item.request, item.route
    return tracing.span(
        f"{req.operation} {route.upstream_model}",
        parent=headers or {},
        kind=SpanKind.CLIENT,
        attributes={
            OPERATION_NAME: req.operation,
            PROVIDER_NAME: PROVIDERS.get(route.provider, route.provider),
            REQUEST_MODEL: route.upstream_model,
            REQUEST_STREAM: req.stream,
            tracing.REQUEST_ID: req.request_id,
            tracing.ATTEMPT: route.attempt,
            tracing.MODEL: req.model,
            tracing.DEPLOYMENT: route.deployment,
        },
    )


def record(span: Span, usage: UsageEvent, progress: Progress) -> None:
    """What the attempt returned: response model and id, tokens, finish reason, error."""
    if not span.is_recording():
        return
    if progress.response_model:
        span.set_attribute(RESPONSE_MODEL, str(progress.response_model))
    if progress.response_id:
        span.set_attribute(RESPONSE_ID, str(progress.response_id))
    span.set_attribute(USAGE_INPUT_TOKENS, usage.prompt_tokens)
    span.set_attribute(USAGE_OUTPUT_TOKENS, usage.completion_tokens)
    if usage.cached_tokens:
        span.set_attribute(USAGE_CACHE_READ_INPUT_TOKENS, usage.cached_tokens)
    if usage.finish_reason:
        span.set_attribute(RESPONSE_FINISH_REASONS, [usage.finish_reason])
    span.set_attribute(tracing.STATUS, usage.status)
    if usage.status == "error":
        error = usage.error_type or "error"
        span.set_attribute(ERROR_TYPE, error)
        span.set_status(StatusCode.ERROR, error)
