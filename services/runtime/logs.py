"""Logging for every service: human console lines or JSON lines.

Request-scoped lines carry ``request_id`` (bound with ``bind_request`` in the
task that handles the request) and, when tracing is on, the ``trace_id`` and
``span_id`` of the current span: as JSON keys, or appended to a console line.
A task inherits the binding of the task that created it, and a binding never
leaks out of its task.

Log records never carry secrets: settings hold keys as ``SecretStr`` and no
service logs request bodies unless ``logging.log_prompts`` is on.
"""

from __future__ import annotations

import logging
import sys
import time
from contextvars import ContextVar
from typing import Any

import orjson

from services.runtime import tracing
from services.runtime.settings import LoggingSettings

_RESERVED = set(vars(logging.makeLogRecord({})))
_CONTEXT_KEYS = ("request_id", "trace_id", "span_id")
_request_id: ContextVar[str | None] = ContextVar("igw_request_id", default=None)


def bind_request(request_id: str) -> None:
    """Tag this task's later log lines (and those of tasks it starts) with ``request_id``."""
    _request_id.set(request_id)


class RequestContext(logging.Filter):
    """Adds the bound ``request_id`` and the current span's ids to a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = _request_id.get()
        if request_id is not None and not hasattr(record, "request_id"):
            record.request_id = request_id
        ids = tracing.current_ids()
        if ids is not None:
            record.trace_id, record.span_id = ids
        return True


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


class ConsoleFormatter(logging.Formatter):
    """``HH:MM:SS LEVEL service message``, then ``request_id=... trace_id=...`` if known."""

    def __init__(self, service: str) -> None:
        super().__init__(
            f"%(asctime)s %(levelname)-5s {service:<10} %(message)s%(_context)s",
            datefmt="%H:%M:%S",
        )

    def format(self, record: logging.LogRecord) -> str:
        context = [f"{k}={v}" for k in _CONTEXT_KEYS if (v := getattr(record, k, None))]
        record._context = f" [{' '.join(context)}]" if context else ""
        return super().format(record)


def setup_logging(settings: LoggingSettings, service: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.format == "json":
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(ConsoleFormatter(service))
    handler.addFilter(RequestContext())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.level)
    for noisy in ("uvicorn.access", "nats", "faststream", "httpx", "aiohttp", "urllib3"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
