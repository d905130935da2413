"""Keeping the rollups (``usage_minute``, ``usage_hour``, ``usage_day``) equal
to the ``requests`` table.

The materialized views of migration 003 fill the rollups as rows are
inserted. An insert into the table and its push into the views are not one
atomic step: with the embedded engine, a process killed between the two keeps
the rows and loses their rollup, and the redelivered events are then (rightly)
not inserted again. So at start-up, before consuming, the accounting service
takes the days of the rows inserted recently (by ``inserted_at``: a usage
event may describe an old attempt), compares each day's attempts in
``requests`` with the three rollups, and rebuilds every day that differs from
the table itself.

``ROLLUP_SELECT`` must aggregate exactly as the views do; a unit test checks
that a rebuild reproduces what the views wrote.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final

log = logging.getLogger("igw.accounting.rollups")

GRAINS: Final = {"minute": "toStartOfMinute", "hour": "toStartOfHour", "day": "toStartOfDay"}

ROLLUP_SELECT: Final = """
SELECT
    {fn}(timestamp) AS bucket,
    tenant, key_id, user_id, model, provider, deployment,
    toUInt64(countIf(final)) AS requests,
    toUInt64(count()) AS attempts,
    toUInt64(countIf(final AND status = 'error')) AS errors,
    toUInt64(countIf(cache_hit)) AS cache_hits,
    toUInt64(sum(prompt_tokens)) AS prompt_tokens,
    toUInt64(sum(completion_tokens)) AS completion_tokens,
    toUInt64(sum(cached_tokens)) AS cached_tokens,
    sum(cost_usd) AS cost_usd,
    quantilesState(0.5, 0.95, 0.99)(latency_ms) AS latency_ms,
    quantilesState(0.5, 0.95, 0.99)(ttft_ms) AS ttft_ms
FROM requests FINAL
WHERE timestamp >= {start} AND timestamp < {end}
GROUP BY bucket, tenant, key_id, user_id, model, provider, deployment
"""

_RECENT_DAYS: Final = """
SELECT DISTINCT toDate(timestamp) FROM requests WHERE inserted_at >= {since} ORDER BY 1
"""

_DAY_COUNTS: Final = """
SELECT
    (SELECT count() FROM requests FINAL WHERE {table_range}),
    (SELECT sum(attempts) FROM usage_minute WHERE {bucket_range}),
    (SELECT sum(attempts) FROM usage_hour WHERE {bucket_range}),
    (SELECT sum(attempts) FROM usage_day WHERE {bucket_range})
"""


def _at(value: datetime) -> str:
    return f"toDateTime64('{value.strftime('%Y-%m-%d %H:%M:%S')}', 3, 'UTC')"


def mismatched_days(client: Any, since: datetime, minute_ttl_days: int | None) -> list[date]:
    """Days holding rows inserted since ``since`` whose rollups disagree with the table
    (the minute rollup only within its TTL, after which its rows are gone on purpose)."""
    recent = client.query(_RECENT_DAYS.format(since=_at(since))).result_rows
    today = datetime.now(UTC).date()
    out: list[date] = []
    for (day,) in recent:
        start, end = _day_range(day)
        counts = client.query(
            _DAY_COUNTS.format(
                table_range=f"timestamp >= {_at(start)} AND timestamp < {_at(end)}",
                bucket_range=f"bucket >= {_at(start)} AND bucket < {_at(end)}",
            )
        ).result_rows[0]
        stored, by_minute, by_hour, by_day = (int(c or 0) for c in counts)
        minutes_kept = minute_ttl_days is None or (today - day).days < minute_ttl_days
        if by_hour != stored or by_day != stored or (minutes_kept and by_minute != stored):
            out.append(day)
    return out


def _day_range(day: date) -> tuple[datetime, datetime]:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start, start + timedelta(days=1)


def rebuild_day(client: Any, day: date) -> None:
    """Replace one day of every rollup with an aggregation of the table."""
    start, end = _day_range(day)
    for grain, fn in GRAINS.items():
        table = f"usage_{grain}"
        client.command(
            f"DELETE FROM {table} WHERE bucket >= {_at(start)} AND bucket < {_at(end)}",
            settings={"mutations_sync": 2},
        )
        select = ROLLUP_SELECT.format(fn=fn, start=_at(start), end=_at(end))
        client.command(f"INSERT INTO {table} {select}")


def reconcile(client: Any, window: timedelta, minute_ttl_days: int | None = None) -> list[date]:
    """Rebuild the days that rows inserted within ``window`` fall on, where their
    rollups disagree with the table; returns them."""
    since = datetime.now(UTC) - window
    days = mismatched_days(client, since, minute_ttl_days)
    for day in days:
        log.warning("rollups of %s disagree with the requests table: rebuilding that day", day)
        rebuild_day(client, day)
    return days
