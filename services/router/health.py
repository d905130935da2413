"""What the router knows about each deployment's health, from the usage events
every attempt produces.

Per deployment: a sliding window of recent outcomes (an error is a 5xx or a
timeout; a client's own 4xx says nothing about the deployment), moving
averages of time to first token and total time, recent latencies for p50/p95,
and the attempts this router has in flight there.

The circuit breaker: with at least ``min_calls`` outcomes in the window and an
error rate of at least ``error_rate``, it opens; after ``cooldown_s`` it lets
one probe through (half-open); the probe's success closes it, its failure opens
it again. Transitions are also applied from the shared record other router
replicas write (see :mod:`services.router.health_sync`), so all replicas agree.
All methods take the time as an argument; nothing here does I/O.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Literal

import orjson

BreakerState = Literal["closed", "open"]
EWMA_ALPHA = 0.2


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    window: int = 20
    min_calls: int = 10
    error_rate: float = 0.5
    cooldown_s: float = 30.0


@dataclass(slots=True)
class DeploymentHealth:
    outcomes: deque[bool] = field(default_factory=lambda: deque(maxlen=20))
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=200))
    ttfts_ms: deque[float] = field(default_factory=lambda: deque(maxlen=200))
    ttft_ms: float | None = None
    total_ms: float | None = None
    in_flight: int = 0
    state: BreakerState = "closed"
    opened_at: float = 0.0
    probing: bool = False

    @property
    def error_rate(self) -> float:
        return (self.outcomes.count(False) / len(self.outcomes)) if self.outcomes else 0.0

    def quantile(self, q: float, ttft: bool = False) -> float | None:
        samples = self.ttfts_ms if ttft else self.latencies_ms
        if not samples:
            return None
        ordered = sorted(samples)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass(frozen=True, slots=True)
class Outcome:
    """The fields of a usage event the health book reads (parsed without a model: the
    router sees every usage event, so this is on its busiest path)."""

    request_id: str
    attempt: int
    deployment: str
    status: str
    http_status: int | None
    latency_ms: float
    ttft_ms: float | None

    @classmethod
    def from_json(cls, raw: bytes) -> Outcome | None:
        try:
            d = orjson.loads(raw)
            return cls(
                str(d["request_id"]),
                int(d.get("attempt") or 1),
                str(d["deployment"]),
                str(d["status"]),
                d.get("http_status"),
                float(d.get("latency_ms") or 0.0),
                d.get("ttft_ms"),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None


def is_failure(event: Outcome) -> bool:
    return event.status == "error" and (event.http_status or 500) >= 500


def _ewma(old: float | None, new: float) -> float:
    return new if old is None else old + EWMA_ALPHA * (new - old)


class HealthBook:
    def __init__(self, policy: BreakerPolicy | None = None) -> None:
        self.policy = policy or BreakerPolicy()
        self._by_deployment: dict[str, DeploymentHealth] = {}

    def get(self, deployment: str) -> DeploymentHealth:
        health = self._by_deployment.get(deployment)
        if health is None:
            health = DeploymentHealth(outcomes=deque(maxlen=self.policy.window))
            self._by_deployment[deployment] = health
        return health

    def deployments(self) -> dict[str, DeploymentHealth]:
        return dict(self._by_deployment)

    # -- what the router sees -------------------------------------------------------------

    def routed(self, deployment: str) -> None:
        self.get(deployment).in_flight += 1

    def record(self, event: Outcome, now: float, *, mine: bool) -> BreakerState | None:
        """Account one finished attempt; returns the new breaker state if it changed."""
        health = self.get(event.deployment)
        if mine and health.in_flight > 0:
            health.in_flight -= 1
        if event.status == "cancelled":
            return None
        ok = not is_failure(event)
        health.outcomes.append(ok)
        if ok and event.status == "ok":
            health.latencies_ms.append(event.latency_ms)
            health.total_ms = _ewma(health.total_ms, event.latency_ms)
            if event.ttft_ms is not None:
                health.ttft_ms = _ewma(health.ttft_ms, event.ttft_ms)
                health.ttfts_ms.append(event.ttft_ms)
        return self._transition(health, ok, now)

    def _transition(self, health: DeploymentHealth, ok: bool, now: float) -> BreakerState | None:
        p = self.policy
        if health.state == "open" and health.probing:
            health.probing = False
            return self.apply(health, "closed" if ok else "open", now)
        if (
            health.state == "closed"
            and len(health.outcomes) >= p.min_calls
            and health.error_rate >= p.error_rate
        ):
            return self.apply(health, "open", now)
        return None

    def apply(
        self, health: DeploymentHealth, state: BreakerState, at: float
    ) -> BreakerState | None:
        """Set a breaker state (from this router or from the shared record)."""
        if health.state == state and (state != "open" or health.opened_at == at):
            return None
        health.state = state
        if state == "open":
            health.opened_at = at
        if state == "closed":
            health.outcomes.clear()
        return state

    # -- what the routing decision asks -----------------------------------------------------

    def available(self, deployment: str, now: float) -> bool:
        """May an attempt go there now? An open breaker whose cooldown has passed lets one
        probe through (the caller takes it with :meth:`claim_probe`); a probe restarts the
        cooldown, so a probe that never reports back is followed by another one."""
        health = self._by_deployment.get(deployment)
        if health is None or health.state == "closed":
            return True
        return now - health.opened_at >= self.policy.cooldown_s

    def claim_probe(self, deployment: str, now: float) -> bool:
        """True if an attempt to ``deployment`` now is the probe of an open breaker."""
        health = self.get(deployment)
        if health.state != "open" or now - health.opened_at < self.policy.cooldown_s:
            return False
        health.probing = True
        health.opened_at = now
        return True

    def half_open(self, deployment: str, now: float) -> bool:
        health = self.get(deployment)
        return health.state == "open" and (health.probing or self.available(deployment, now))

    def latency_ms(self, deployment: str) -> float:
        """Expected time for the next attempt: the moving average of time to first token
        and total time (0 when unknown, so new deployments get tried)."""
        health = self._by_deployment.get(deployment)
        if health is None:
            return 0.0
        parts = [v for v in (health.ttft_ms, health.total_ms) if v is not None]
        return sum(parts) / len(parts) if parts else 0.0

    def in_flight(self, deployment: str) -> int:
        health = self._by_deployment.get(deployment)
        return health.in_flight if health else 0
