"""Request-scoped log lines carry the request id and, with tracing on, the trace id."""

from __future__ import annotations

import contextvars
import logging

import orjson
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from services.runtime import tracing
from services.runtime.logs import ConsoleFormatter, JsonFormatter, RequestContext, bind_request


def record(message: str = "hello") -> logging.LogRecord:
    out = logging.makeLogRecord({"name": "igw.test", "levelno": logging.INFO, "msg": message})
    out.levelname = "INFO"
    RequestContext().filter(out)
    return out


def as_json(rec: logging.LogRecord) -> dict[str, object]:
    return orjson.loads(JsonFormatter("router").format(rec))  # type: ignore[no-any-return]


def test_a_line_outside_a_request_has_no_context() -> None:
    line = as_json(record())
    assert line["msg"] == "hello" and line["service"] == "router"
    assert not {"request_id", "trace_id", "span_id"} & line.keys()
    assert ConsoleFormatter("router").format(record()).endswith("router     hello")


def test_a_bound_request_id_is_on_json_and_console_lines() -> None:
    def in_request() -> tuple[dict[str, object], str]:
        bind_request("req_abc")
        return as_json(record()), ConsoleFormatter("router").format(record())

    line, console = contextvars.copy_context().run(in_request)
    assert line["request_id"] == "req_abc"
    assert "trace_id" not in line  # tracing is off
    assert console.endswith("hello [request_id=req_abc]")
    assert "request_id" not in as_json(record())  # the binding stayed in its context


def test_the_current_span_gives_trace_and_span_ids(spans: InMemorySpanExporter) -> None:
    def in_request() -> tuple[dict[str, object], str, str]:
        bind_request("req_abc")
        with tracing.span("route sim") as span:
            context = span.get_span_context()
            line = as_json(record())
            console = ConsoleFormatter("router").format(record())
        return line, console, f"{context.trace_id:032x}"

    line, console, trace_id = contextvars.copy_context().run(in_request)
    assert line["trace_id"] == trace_id
    assert isinstance(line["span_id"], str) and len(line["span_id"]) == 16
    assert f"request_id=req_abc trace_id={trace_id} span_id=" in console


def test_an_explicit_request_id_is_kept() -> None:
    def in_request() -> dict[str, object]:
        bind_request("req_bound")
        rec = logging.makeLogRecord({"msg": "x", "request_id": "req_explicit"})
        RequestContext().filter(rec)
        return as_json(rec)

    assert contextvars.copy_context().run(in_request)["request_id"] == "req_explicit"
