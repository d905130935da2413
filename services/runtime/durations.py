"""Durations as people write them in key, user and team settings: 30s, 15m, 12h, 7d."""

from __future__ import annotations

import re

from services.runtime.errors import InvalidRequest

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration_s(text: str, param: str) -> float:
    """Seconds in ``text``; a 400 naming ``param`` when it is not a duration."""
    match = _DURATION.match(text)
    if match is None:
        raise InvalidRequest(
            f"'{param}' must look like 30s, 15m, 12h or 7d, not {text!r}", param=param
        )
    return float(match.group(1)) * _UNIT_S[match.group(2)]
