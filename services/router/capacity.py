"""Per-deployment request and token budgets (``rpm_limit``, ``tpm_limit``).

Each limit is a token bucket that refills continuously at ``limit / 60`` per
second and holds at most one second's worth of requests (at least one) and ten seconds'
worth of tokens, so a deployment never receives a burst its provider would
refuse; a request larger than the token bucket waits for a full bucket. A request takes one
request token and its estimated tokens (prompt estimate plus requested output).
When a deployment has no room, :meth:`Capacity.wait_s` says how long until it
has. The buckets live in each router replica.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.runtime.settings import ModelDeployment


@dataclass(slots=True)
class _Bucket:
    rate: float  # per second
    size: float
    level: float
    at: float

    def refill(self, now: float) -> None:
        self.level = min(self.size, self.level + (now - self.at) * self.rate)
        self.at = now

    def wait_s(self, amount: float) -> float:
        need = min(amount, self.size) - self.level
        return 0.0 if need <= 0 else need / self.rate


def _bucket(per_minute: int, now: float, seconds: float = 1.0) -> _Bucket:
    rate = per_minute / 60.0
    size = max(1.0, rate * seconds)
    return _Bucket(rate=rate, size=size, level=size, at=now)


class Capacity:
    def __init__(self) -> None:
        self._requests: dict[str, _Bucket] = {}
        self._tokens: dict[str, _Bucket] = {}

    def _buckets(self, d: ModelDeployment, now: float) -> list[tuple[_Bucket, float]]:
        out: list[tuple[_Bucket, float]] = []
        if d.rpm_limit is not None:
            bucket = self._requests.get(d.deployment)
            if bucket is None:
                bucket = self._requests[d.deployment] = _bucket(d.rpm_limit, now)
            out.append((bucket, 1.0))
        return out

    def _all(self, d: ModelDeployment, tokens: int, now: float) -> list[tuple[_Bucket, float]]:
        out = self._buckets(d, now)
        if d.tpm_limit is not None:
            bucket = self._tokens.get(d.deployment)
            if bucket is None:
                bucket = self._tokens[d.deployment] = _bucket(d.tpm_limit, now, seconds=10.0)
            out.append((bucket, float(tokens)))
        for bucket, _ in out:
            bucket.refill(now)
        return out

    def wait_s(self, d: ModelDeployment, tokens: int, now: float) -> float:
        """Seconds until ``d`` has room for a request of ``tokens`` (0: it has now)."""
        return max((b.wait_s(amount) for b, amount in self._all(d, tokens, now)), default=0.0)

    def take(self, d: ModelDeployment, tokens: int, now: float) -> None:
        for bucket, amount in self._all(d, tokens, now):
            bucket.level -= min(amount, bucket.size)
