"""Budgets and rate limits as they are kept in NATS KV, shared by every replica.

``igw_spend`` (no TTL) holds one ``SpendRecord`` per budget holder (a key's
also holds its parallel-request slots and its current minute's request and
token counts, so a key with every limit is one record); ``igw_limits`` (a
short TTL) holds one ``WindowRecord`` per team, model or global scope and
minute. Every change is a
compare-and-set on the entry's revision, so concurrent ingress replicas can
never admit more than a limit allows.

Keys in the buckets::

    spend.key.<token>     spend.user.<id>     spend.team.<id>
    rl.<scope>.<id>.<minute>      scope: team | model | global

User, team and model ids are encoded with :func:`kv_token` (KV keys allow only
letters, digits and ``-_=/.``).
"""

from __future__ import annotations

import base64
import re
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field

SAFE_TOKEN: Final = re.compile(r"^[A-Za-z0-9_-]{1,200}$")
Holder = Literal["key", "user", "team"]
Scope = Literal["key", "team", "model", "global"]


def kv_token(value: str) -> str:
    """``value`` itself when it is KV-safe, else ``b64.`` + its base64url form."""
    if SAFE_TOKEN.match(value):
        return value
    return "b64." + base64.urlsafe_b64encode(value.encode()).decode().rstrip("=")


def spend_key(holder: Holder, ident: str) -> str:
    return f"spend.{holder}.{kv_token(ident)}"


def window_key(scope: Scope, ident: str, minute: int) -> str:
    return f"rl.{scope}.{kv_token(ident)}.{minute}"


CURSOR_KEY: Final = "settler.cursor"
"""The last ``IGW_USAGE`` stream sequence the spend settler has applied."""


class _Record(BaseModel):
    model_config = ConfigDict(extra="ignore")

    schema_version: int = 1


class Hold(BaseModel):
    model_config = ConfigDict(extra="ignore")

    amount: float = Field(description="worst-case cost reserved, USD")
    expires: float = Field(description="epoch seconds; a hold past this is dropped")


class Lease(BaseModel):
    """Capacity one ingress process has taken from a key's record in advance, to
    admit that key's requests without a round trip each (see
    :mod:`services.runtime.leases`). Every figure here already counts against
    the key's limits, so leases never let the fleet pass them."""

    model_config = ConfigDict(extra="ignore")

    expires: float = Field(description="epoch seconds; a lease past this is dropped")
    minute: int = Field(0, description="the minute ``requests`` and ``tokens`` are for")
    requests: int = Field(0, description="requests granted in ``minute`` (counted in the key's)")
    tokens: int = Field(0, description="tokens granted in ``minute`` (counted in the key's)")
    slots: int = Field(0, description="parallel-request slots held")
    granted: float = Field(0.0, description="budget granted so far, USD")
    released: float = Field(
        0.0, description="budget given back by the settler as the lease's requests settled"
    )

    def held(self) -> float:
        return max(0.0, self.granted - self.released)


class SpendRecord(_Record):
    """What one key, user or team has spent in its budget period, what requests in
    flight hold against the budget, and (for a key) which requests hold a slot."""

    spent: float = 0.0
    period_start: float | None = Field(None, description="start of the current budget period")
    period_s: float | None = Field(None, description="budget_duration in seconds; None: never")
    applied_seq: int = Field(0, description="the last usage-stream sequence settled here")
    holds: dict[str, Hold] = Field(default_factory=dict, description="by request id")
    slots: dict[str, float] = Field(
        default_factory=dict, description="a key's requests in flight: id to lapse time"
    )
    minute: int = Field(0, description="the minute a key's request and token counts are for")
    requests: int = Field(0, description="a key's requests admitted in ``minute``")
    tokens: int = Field(0, description="a key's tokens counted in ``minute``")
    leases: dict[str, Lease] = Field(
        default_factory=dict, description="a key's capacity leased to ingress processes, by id"
    )

    def held(self, now: float) -> float:
        held = sum(h.amount for h in self.holds.values() if h.expires > now)
        return held + sum(lease.held() for lease in self.leases.values() if lease.expires > now)

    def at_minute(self, minute: int) -> None:
        """Start counting a new minute (a key's rpm and tpm)."""
        if self.minute != minute:
            self.minute, self.requests, self.tokens = minute, 0, 0

    def live_slots(self, now: float) -> int:
        own = sum(1 for lapse in self.slots.values() if lapse > now)
        return own + sum(lease.slots for lease in self.leases.values() if lease.expires > now)

    def prune(self, now: float) -> None:
        for request_id in [r for r, h in self.holds.items() if h.expires <= now]:
            del self.holds[request_id]
        for request_id in [r for r, lapse in self.slots.items() if lapse <= now]:
            del self.slots[request_id]
        for lease_id in [i for i, lease in self.leases.items() if lease.expires <= now]:
            del self.leases[lease_id]

    def roll(self, now: float) -> None:
        """Start a new budget period when the current one is over."""
        if self.period_s is None:
            return
        if self.period_start is None:
            self.period_start = now
            return
        if now >= self.period_start + self.period_s:
            periods = (now - self.period_start) // self.period_s
            self.period_start += periods * self.period_s
            self.spent = 0.0

    def resets_at(self) -> float | None:
        if self.period_s is None or self.period_start is None:
            return None
        return self.period_start + self.period_s


class WindowRecord(_Record):
    """Requests and tokens admitted in one scope's minute."""

    requests: int = 0
    tokens: int = 0
