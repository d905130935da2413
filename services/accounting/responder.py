"""Answers one ``SqlQuery`` request with one ``SqlResult``, whatever goes wrong.

The requester always gets a reply: a body that is not a ``SqlQuery``, a
rejected statement, an engine error or a bug all end up in
``SqlResult.error``. Row and time limits are capped by the settings.
"""

from __future__ import annotations

import logging

from pydantic import ValidationError

from schemas.bus import SqlQuery, SqlResult
from services.accounting.store import UsageStore
from services.runtime.settings import ClickHouseSettings

log = logging.getLogger("igw.accounting.sql")


async def answer(store: UsageStore, data: bytes, limits: ClickHouseSettings) -> SqlResult:
    try:
        request = SqlQuery.model_validate_json(data)
    except ValidationError as exc:
        return SqlResult(error=f"not a SqlQuery: {exc.error_count()} validation error(s)")
    max_rows = max(1, min(request.max_rows, limits.max_result_rows))
    timeout_s = min(request.timeout_s, limits.query_timeout_s)
    if timeout_s <= 0:
        timeout_s = limits.query_timeout_s
    try:
        return await store.query(request.sql, max_rows=max_rows, timeout_s=timeout_s)
    except Exception as exc:
        log.exception("SQL query failed unexpectedly")
        return SqlResult(error=f"internal error: {type(exc).__name__}: {exc}")
