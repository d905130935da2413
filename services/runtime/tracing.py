"""OpenTelemetry tracing across the bus: one trace per request, from the
ingress's HTTP span through the router and the worker to accounting.

Off unless an OTLP endpoint is configured (``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``). Then ``setup`` installs an SDK
``TracerProvider`` that exports OTLP/HTTP (protobuf) in batches, configured by
the SDK's own variables (``OTEL_SERVICE_NAME``, ``OTEL_TRACES_SAMPLER``,
``OTEL_BSP_SCHEDULE_DELAY``, ...). Off, no SDK object exists and every helper
returns after one check of ``ENABLED``: no spans, no headers.

Trace context travels in NATS message headers as W3C ``traceparent`` and
``tracestate``: a publisher passes its headers dict through ``inject``; a
consumer opens its span with ``span(..., parent=msg.headers)``. A message
without them (a producer with tracing off) starts a new trace.

``ENABLED`` is set once, by ``setup`` at start-up (or ``activate`` in tests),
and only read afterwards.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from opentelemetry import propagate, trace
from opentelemetry.trace import INVALID_SPAN, Span, SpanKind, Tracer

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

log = logging.getLogger("igw.tracing")

ENABLED = False
"""True when spans are recorded and context is propagated (see the module docstring)."""

_tracer: Tracer | None = None
NOOP: contextlib.nullcontext[Span] = contextlib.nullcontext(INVALID_SPAN)
"""What ``span`` returns when tracing is off: a reusable no-op around ``INVALID_SPAN``."""

# IGW's own span attributes (the GenAI ones live in services.workers.genai)
REQUEST_ID = "igw.request_id"
ATTEMPT = "igw.attempt"
MODEL = "igw.model"
PRIORITY = "igw.priority"
PROVIDER = "igw.provider"
DEPLOYMENT = "igw.deployment"
ROUTE_REASON = "igw.route.reason"
BATCH_ID = "igw.batch_id"
STATUS = "igw.status"

_ENDPOINTS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
_PROTOCOLS = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")


def wanted(environ: Mapping[str, str]) -> bool:
    """Whether the environment asks for trace export (an OTLP endpoint, SDK not disabled)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return False
    return any(environ.get(name, "").strip() for name in _ENDPOINTS)


def setup(service: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Start exporting this process's spans as ``service`` (``OTEL_SERVICE_NAME``
    wins when set) if the environment asks for it; True when tracing is on."""
    if not wanted(environ):
        return False
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from services.runtime.version import VERSION

    protocol = next((environ[n] for n in _PROTOCOLS if environ.get(n)), "http/protobuf")
    if protocol.strip().lower() != "http/protobuf":
        log.warning(
            "OTLP protocol %r is not supported; exporting spans as http/protobuf "
            "(point the endpoint at the collector's OTLP/HTTP port, usually 4318)",
            protocol,
        )
    resource = Resource.create({SERVICE_VERSION: VERSION})
    if str(resource.attributes.get(SERVICE_NAME, "unknown_service")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: service}))
    provider = TracerProvider(resource=resource)  # the sampler comes from OTEL_TRACES_SAMPLER
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)  # FastAPI's own HTTP spans use the global one
    activate(provider)
    log.info("tracing on: exporting spans as %s", resource.attributes.get(SERVICE_NAME))
    return True


def activate(provider: TracerProvider) -> None:
    """Record spans with ``provider`` (``setup`` calls it; tests pass their own)."""
    global ENABLED, _tracer
    _tracer = provider.get_tracer("igw")
    ENABLED = True


def deactivate() -> None:
    """Back to off (for tests)."""
    global ENABLED, _tracer
    ENABLED, _tracer = False, None


def inject(headers: dict[str, str]) -> dict[str, str]:
    """``headers`` with the current trace context added when tracing is on."""
    if ENABLED:
        propagate.inject(headers)
    return headers


def span(
    name: str,
    *,
    parent: Mapping[str, str] | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, Any] | None = None,
) -> contextlib.AbstractContextManager[Span]:
    """A span, current inside the ``with``; a child of the context carried in the
    headers ``parent`` when given, else of the current span. Off: a shared no-op
    whose span records nothing."""
    if not ENABLED or _tracer is None:
        return NOOP
    context = propagate.extract(parent) if parent is not None else None
    return _tracer.start_as_current_span(name, context=context, kind=kind, attributes=attributes)


def start_span(
    name: str,
    *,
    parent: Mapping[str, str] | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, Any] | None = None,
) -> Span:
    """A span that is not made current; its owner ends it (``INVALID_SPAN`` when off)."""
    if not ENABLED or _tracer is None:
        return INVALID_SPAN
    context = propagate.extract(parent) if parent is not None else None
    return _tracer.start_span(name, context=context, kind=kind, attributes=attributes)


def tag(key: str, value: str | int | float | bool) -> None:
    """Set an attribute on the current span, when tracing is on."""
    if ENABLED:
        trace.get_current_span().set_attribute(key, value)


def current_ids() -> tuple[str, str] | None:
    """``(trace_id, span_id)`` of the current span in W3C hex, or None."""
    if not ENABLED:
        return None
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


def batch_item_span(batch_id: str, request_id: str) -> contextlib.AbstractContextManager[Span]:
    """The root span of one batch item's trace, around its publish."""
    if not ENABLED:
        return NOOP
    return span(
        "send batch item",
        parent={},  # a trace of its own, whatever the batch runner was doing
        kind=SpanKind.PRODUCER,
        attributes={BATCH_ID: batch_id, REQUEST_ID: request_id},
    )
