"""Query parameters of the analytics API (``/api/v1/usage``, ``/analytics/...``).

Every query names a time range (``start``, ``end``: ISO 8601 or epoch seconds;
by default the last 24 hours). Group-by and bucket values are closed sets, so
the SQL built from them never contains text a client chose.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

GroupBy = Literal["model", "provider", "deployment", "key", "team", "user"]
Bucket = Literal["minute", "hour", "day"]

GROUP_COLUMNS: Final[dict[str, str]] = {
    "model": "model",
    "provider": "provider",
    "deployment": "deployment",
    "key": "key_id",
    "team": "tenant",
    "user": "user_id",
}
DEFAULT_RANGE: Final = timedelta(hours=24)
MAX_POINTS: Final = 10_000


class TimeRange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: datetime | None = None
    end: datetime | None = None

    @field_validator("start", "end", mode="before")
    @classmethod
    def _epoch_or_iso(cls, value: object) -> object:
        if isinstance(value, str) and value.replace(".", "", 1).isdigit():
            return datetime.fromtimestamp(float(value), UTC)
        return value

    @model_validator(mode="after")
    def _defaults(self) -> TimeRange:
        end = _utc(self.end) if self.end else datetime.now(UTC)
        start = _utc(self.start) if self.start else end - DEFAULT_RANGE
        if start >= end:
            raise ValueError("start must be before end")
        self.start, self.end = start, end
        return self

    @property
    def since(self) -> datetime:
        assert self.start is not None
        return self.start

    @property
    def until(self) -> datetime:
        assert self.end is not None
        return self.end


class SpendQuery(TimeRange):
    group_by: GroupBy = "model"
    bucket: Bucket = "hour"

    @model_validator(mode="after")
    def _bounded(self) -> SpendQuery:
        seconds = {"minute": 60, "hour": 3600, "day": 86400}[self.bucket]
        if (self.until - self.since).total_seconds() / seconds > MAX_POINTS:
            raise ValueError(
                f"that range has more than {MAX_POINTS} {self.bucket}s: pick a coarser bucket"
            )
        return self


class ErrorsQuery(TimeRange):
    group_by: GroupBy = "provider"


class KeysQuery(TimeRange):
    limit: int = Field(100, ge=1, le=10_000)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
