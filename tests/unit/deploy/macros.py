"""Expand the Grafana ClickHouse plugin's macros and dashboard variables into plain SQL.

Only what the IGW dashboards use, expanded the way the plugin does (its macro
table: ``$__timeFilter(col)`` becomes ``col >= toDateTime(<from>) AND col <=
toDateTime(<to>)`` with epoch seconds, ``$__timeInterval(col)`` becomes
``toStartOfInterval(toDateTime(col), INTERVAL <n> second)``). A macro or
variable this helper does not know raises ``KeyError``, so a dashboard cannot
use one that the tests never ran.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

_CALL = re.compile(r"\$__(\w+)\(([^()]*)\)")
_PLAIN = re.compile(r"\$__(\w+)")
_VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")


@dataclass(frozen=True)
class TimeRange:
    start: int  # epoch seconds, inclusive
    end: int  # epoch seconds, inclusive
    interval_s: int  # what Grafana derives from the range and the panel width


def expand(sql: str, window: TimeRange, variables: Mapping[str, str]) -> str:
    """``sql`` with every macro and ``$var`` / ``${var}`` replaced by concrete SQL."""
    start, end, step = window.start, window.end, window.interval_s
    calls = {
        "timeFilter": lambda c: f"{c} >= toDateTime({start}) AND {c} <= toDateTime({end})",
        "timeFilter_ms": lambda c: (
            f"{c} >= fromUnixTimestamp64Milli({start * 1000})"
            f" AND {c} <= fromUnixTimestamp64Milli({end * 1000})"
        ),
        "timeFrom": lambda c: f"{c} >= toDateTime({start})",
        "timeTo": lambda c: f"{c} <= toDateTime({end})",
        "timeInterval": lambda c: f"toStartOfInterval(toDateTime({c}), INTERVAL {step} second)",
    }
    plain = {
        "fromTime": f"toDateTime({start})",
        "toTime": f"toDateTime({end})",
        "interval_s": str(step),
    }
    sql = _CALL.sub(lambda m: calls[m.group(1)](m.group(2).strip()), sql)
    sql = _PLAIN.sub(lambda m: plain[m.group(1)], sql)
    return _VARIABLE.sub(lambda m: variables[m.group(1) or m.group(2)], sql)
