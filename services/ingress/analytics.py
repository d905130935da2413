"""The analytics API for analysts and dashboards (viewer or admin keys).

``GET /api/v1/usage``           totals: requests, tokens, cost, cache hits and misses
``GET /analytics/usage-by-key`` per key: requests, tokens, cost, errors, last use
``GET /analytics/spend``        time series by model, provider, deployment, key, team or user
``GET /analytics/latency``      latency and time-to-first-token percentiles per deployment
``GET /analytics/errors``       error rates and error types by a dimension

The queries (see ``analytics_sql``) go over NATS to the accounting service,
which owns the ClickHouse store, as ``igw sql`` does. Costs are JSON numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from schemas import subjects as s
from schemas.analytics import ErrorsQuery, KeysQuery, SpendQuery, TimeRange
from schemas.bus import SqlQuery, SqlResult
from services.ingress import analytics_sql as q
from services.ingress.body import validate
from services.ingress.context import IngressContext
from services.ingress.dispatch import authorize
from services.ingress.http_errors import JSON, gateway_error_response
from services.runtime.errors import GatewayError, ServiceUnavailable

Params = TypeVar("Params", bound=BaseModel)
REPLY_MARGIN_S = 5.0


async def usage(request: Request) -> Response:
    return await _answer(request, TimeRange, q.usage_totals, _totals)


async def spend(request: Request) -> Response:
    return await _answer(request, SpendQuery, q.spend_series, _series)


async def latency(request: Request) -> Response:
    return await _answer(request, TimeRange, q.latency, _latency)


async def errors(request: Request) -> Response:
    return await _answer(request, ErrorsQuery, q.errors, _errors)


async def usage_by_key(request: Request) -> Response:
    ctx: IngressContext = request.app.state.ctx

    def shape(params: KeysQuery, result: SqlResult) -> dict[str, Any]:
        records = ctx.keys.records if ctx.keys is not None else {}
        data = []
        for row in _dicts(result):
            record = records.get(row["key_id"])
            data.append(
                {
                    "key_id": row["key_id"] or None,
                    "key_alias": record.key_alias if record else None,
                    **_counts(row),
                    "last_used": row["last_used"],
                }
            )
        return {"object": "list", **_span(params), "data": data}

    return await _answer(request, KeysQuery, q.usage_by_key, shape)


async def _answer(
    request: Request,
    params_model: type[Params],
    build: Callable[[Params], str],
    shape: Callable[[Params, SqlResult], dict[str, Any]],
) -> Response:
    ctx: IngressContext = request.app.state.ctx
    try:
        authorize(ctx, request).require("viewer")
        params = validate(params_model, dict(request.query_params))
        result = await _run(ctx, build(params))
    except GatewayError as exc:
        return gateway_error_response(exc)
    return Response(orjson.dumps(shape(params, result)), media_type=JSON)


async def _run(ctx: IngressContext, sql: str) -> SqlResult:
    ch = ctx.settings.clickhouse
    query = SqlQuery(sql=sql, max_rows=ch.max_result_rows, timeout_s=ch.query_timeout_s)
    try:
        reply = await ctx.nc.request(
            s.ACCOUNTING_SQL, query.model_dump_json().encode(), timeout=ch.query_timeout_s + 5
        )
    except Exception:  # no accounting service answered, or the bus is down
        raise ServiceUnavailable(
            "the accounting service did not answer; is it running?", code="analytics_unavailable"
        ) from None
    result = SqlResult.model_validate_json(reply.data)
    if result.error is not None:
        raise GatewayError(f"the analytics query failed: {result.error}")
    return result


def _dicts(result: SqlResult) -> list[dict[str, Any]]:
    return [dict(zip(result.columns, row, strict=True)) for row in result.rows]


def _money(value: Any) -> float:
    return float(Decimal(str(value))) if value is not None else 0.0


def _span(params: TimeRange) -> dict[str, str]:
    return {"start": params.since.isoformat(), "end": params.until.isoformat()}


def _counts(row: dict[str, Any]) -> dict[str, Any]:
    """The usual measures of a result row (``n_...`` columns) under their API names."""
    return {
        "requests": row["n_requests"],
        "tokens": row["n_prompt"] + row["n_completion"],
        "prompt_tokens": row["n_prompt"],
        "completion_tokens": row["n_completion"],
        "total_tokens": row["n_prompt"] + row["n_completion"],
        "cost_usd": _money(row["n_cost"]),
        "errors": row["n_errors"],
    }


def _totals(params: TimeRange, result: SqlResult) -> dict[str, Any]:
    row = _dicts(result)[0]
    return {
        "total_requests": row["n_requests"],
        "total_tokens": row["n_prompt"] + row["n_completion"],
        "prompt_tokens": row["n_prompt"],
        "completion_tokens": row["n_completion"],
        "total_cost": _money(row["n_cost"]),
        "cache_hits": row["n_hits"],
        "cache_misses": row["n_misses"],
        "errors": row["n_errors"],
        **_span(params),
    }


def _series(params: SpendQuery, result: SqlResult) -> dict[str, Any]:
    series: dict[str, list[dict[str, Any]]] = {}
    for row in _dicts(result):
        counts = _counts(row)
        del counts["total_tokens"]
        series.setdefault(row["grp"], []).append({"t": row["t"], **counts})
    return {
        "group_by": params.group_by,
        "bucket": params.bucket,
        **_span(params),
        "series": [{"group": g, "points": p} for g, p in series.items()],
    }


def _latency(params: TimeRange, result: SqlResult) -> dict[str, Any]:
    data = []
    for row in _dicts(result):
        lat, ttft = row["latency"], row["ttft"]
        data.append(
            {
                "provider": row["provider"],
                "deployment": row["deployment"],
                "model": row["model"],
                "requests": row["n_requests"],
                "p50_ms": _num(lat[0]),
                "p95_ms": _num(lat[1]),
                "p99_ms": _num(lat[2]),
                "ttft_p50_ms": _num(ttft[0]),
                "ttft_p95_ms": _num(ttft[1]),
                "output_tps_p50": _num(row["output_tps_p50"]),
            }
        )
    return {"object": "list", **_span(params), "data": data}


def _errors(params: ErrorsQuery, result: SqlResult) -> dict[str, Any]:
    data = []
    for row in _dicts(result):
        requests, failed = row["n_requests"], row["n_errors"]
        data.append(
            {
                "group": row["grp"],
                "requests": requests,
                "errors": failed,
                "error_rate": failed / requests if requests else 0.0,
                "by_type": row["by_type"],
            }
        )
    return {"object": "list", "group_by": params.group_by, **_span(params), "data": data}


def _num(value: Any) -> float | None:
    """A quantile of no values is nan in ClickHouse: null in JSON."""
    if value is None:
        return None
    number = float(value)
    return None if number != number else round(number, 3)
