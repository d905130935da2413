"""Keeping the rollups (``usage_minute``, ``usage_hour``, ``usage_day``) equal
to the ``requests`` table.

The materialized views of migration 003 fill the rollups as rows are
inserted. An insert into the table and its push into the views are not one
atomic step: with the embedded engine, a process killed between the two keeps
the rows and loses their rollup, and the redelivered events are then (rightly)
not inserted again. So at start-up, before consuming, the accounting service
compares the attempts per minute in ``requests`` with ``usage_minute`` over
the recent past and rebuilds every day that differs, in all three rollups,
from the table itself.

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

_MISMATCHED_DAYS: Final = """
SELECT DISTINCT toDate(bucket) AS day FROM
(
    SELECT toStartOfMinute(timestamp) AS bucket, count() AS attempts
    FROM requests FINAL WHERE timestamp >= {since} GROUP BY bucket
) AS stored
FULL OUTER JOIN
(
    SELECT bucket, sum(attempts) AS attempts FROM usage_minute
    WHERE bucket >= {since} GROUP BY bucket
) AS rolled
USING (bucket)
WHERE stored.attempts != rolled.attempts
ORDER BY day
"""


def _at(value: datetime) -> str:
    return f"toDateTime64('{value.strftime('%Y-%m-%d %H:%M:%S')}', 3, 'UTC')"


def mismatched_days(client: Any, since: datetime) -> list[date]:
    """Days whose minute rollups disagree with the table, from ``since`` on."""
    rows = client.query(_MISMATCHED_DAYS.format(since=_at(since))).result_rows
    return [row[0] for row in rows]


def rebuild_day(client: Any, day: date) -> None:
    """Replace one day of every rollup with an aggregation of the table."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    end = start + timedelta(days=1)
    for grain, fn in GRAINS.items():
        table = f"usage_{grain}"
        client.command(
            f"DELETE FROM {table} WHERE bucket >= {_at(start)} AND bucket < {_at(end)}",
            settings={"mutations_sync": 2},
        )
        select = ROLLUP_SELECT.format(fn=fn, start=_at(start), end=_at(end))
        client.command(f"INSERT INTO {table} {select}")


def reconcile(client: Any, window: timedelta) -> list[date]:
    """Rebuild the recent days whose rollups disagree with the table; returns them."""
    since = (datetime.now(UTC) - window).replace(hour=0, minute=0, second=0, microsecond=0)
    days = mismatched_days(client, since)
    for day in days:
        log.warning("rollups of %s disagree with the requests table: rebuilding that day", day)
        rebuild_day(client, day)
    return days
