"""The SQL behind the analytics API, built from validated parameters only.

Totals, per-key figures, latency percentiles and error rates read the
``requests`` table (the reader applies ``final=1``, so redelivered attempts
count once) over exactly the range asked for. Time series read the rollup of
their bucket size (``usage_minute``, ``usage_hour``, ``usage_day``), whose
buckets are aligned by construction. Timestamps are formatted here, never
taken from the client as text; group-by columns come from a closed table.
Result aliases (``n_...``) never reuse a column name: ClickHouse aliases are
visible in the whole query, so ``sum(x) AS x`` would capture other uses of x.
"""

from __future__ import annotations

from datetime import datetime

from schemas.analytics import GROUP_COLUMNS, ErrorsQuery, KeysQuery, SpendQuery, TimeRange

ROLLUPS = {"minute": "usage_minute", "hour": "usage_hour", "day": "usage_day"}
BUCKET_START = {"minute": "toStartOfMinute", "hour": "toStartOfHour", "day": "toStartOfDay"}


def ts(value: datetime) -> str:
    return f"toDateTime64('{value.strftime('%Y-%m-%d %H:%M:%S.%f')[:-3]}', 3, 'UTC')"


def _range(q: TimeRange, column: str = "timestamp") -> str:
    return f"{column} >= {ts(q.since)} AND {column} < {ts(q.until)}"


def usage_totals(q: TimeRange) -> str:
    return f"""
SELECT
    countIf(final) AS n_requests,
    sum(prompt_tokens) AS n_prompt,
    sum(completion_tokens) AS n_completion,
    sum(cost_usd) AS n_cost,
    countIf(final AND cache_hit) AS n_hits,
    countIf(final AND NOT cache_hit) AS n_misses,
    countIf(final AND status = 'error') AS n_errors
FROM requests
WHERE {_range(q)}"""


def spend_series(q: SpendQuery) -> str:
    column = GROUP_COLUMNS[q.group_by]
    start = f"{BUCKET_START[q.bucket]}({ts(q.since)})"
    return f"""
SELECT
    {column} AS grp,
    bucket AS t,
    sum(requests) AS n_requests,
    sum(prompt_tokens) AS n_prompt,
    sum(completion_tokens) AS n_completion,
    sum(cost_usd) AS n_cost,
    sum(errors) AS n_errors
FROM {ROLLUPS[q.bucket]}
WHERE bucket >= {start} AND bucket < {ts(q.until)}
GROUP BY grp, t
ORDER BY grp, t"""


def latency(q: TimeRange) -> str:
    return f"""
SELECT
    provider,
    deployment,
    any(model) AS model,
    count() AS n_requests,
    quantiles(0.5, 0.95, 0.99)(latency_ms) AS latency,
    quantiles(0.5, 0.95)(ttft_ms) AS ttft,
    quantileIf(0.5)(output_tps, output_tps > 0) AS output_tps_p50
FROM requests
WHERE {_range(q)} AND NOT cache_hit AND provider != 'router'
GROUP BY provider, deployment
ORDER BY provider, deployment"""


def errors(q: ErrorsQuery) -> str:
    column = GROUP_COLUMNS[q.group_by]
    return f"""
SELECT
    {column} AS grp,
    countIf(final) AS n_requests,
    countIf(final AND status = 'error') AS n_errors,
    sumMapIf(map(ifNull(error_type, 'unknown'), toUInt64(1)), final AND status = 'error')
        AS by_type
FROM requests
WHERE {_range(q)}
GROUP BY grp
ORDER BY n_errors DESC, grp"""


def usage_by_key(q: KeysQuery) -> str:
    return f"""
SELECT
    key_id,
    countIf(final) AS n_requests,
    sum(prompt_tokens) AS n_prompt,
    sum(completion_tokens) AS n_completion,
    sum(cost_usd) AS n_cost,
    countIf(final AND status = 'error') AS n_errors,
    max(timestamp) AS last_used
FROM requests
WHERE {_range(q)}
GROUP BY key_id
ORDER BY n_cost DESC, n_requests DESC, key_id
LIMIT {int(q.limit)}"""
