"""Capacity leased from a key's shared record to one ingress process.

Without leases a key with limits costs one compare-and-set on its record per
request (:mod:`services.runtime.admission`), and for a busy key with room to
spare that round trip is most of what admission costs. So the write that
admits a request also leases this process a share of what the key has left:
``1/limits.lease_share`` of its remaining requests and tokens this minute, of
its free parallel slots and of its remaining budget. The key's next requests
are admitted from the lease in memory.

Why limits still hold fleet-wide:

- whatever is leased is counted in the key's record when it is granted (the
  minute's request and token counts, the live slots, the held budget), so
  every other replica sees it as taken;
- this process's view of a lease never exceeds what the record says: a grant
  is added locally only once it is written, and a give-back is taken off
  locally before it is written.

Near a limit the shares become too small to be worth having (fewer than
``MIN_REQUESTS`` requests, ``MIN_SLOTS`` slots, or ``MIN_NEXT`` requests like
the next one for tokens and budget), nothing more is leased, and admission
goes back to one exact write per request. A key's last requests of a minute
or of a budget are decided as precisely as without leases.

Budget: a request admitted from a lease takes its worst-case cost from the
lease and names the lease on the bus (``budget_lease``). When its final usage
event is settled, the settler adds the real cost to the key's spend and gives
the worst case back to the lease (``released``) in the same write. So what a
lease holds, granted minus released, is exactly its unused grant plus the
worst cases of its requests not settled yet.

Lapses: a lease expires ``LEASE_AHEAD_S`` after the latest hold it may cover
would have lapsed, and the writes that grant more renew it. When this process
dies, its lease lapses like the holds of its requests would have. A lease is
replaced every ``ROTATE_S``, so the hold of a request whose usage event never
comes cannot stay reserved past the old lease's expiry. A lease unused for
``IDLE_S`` gives back everything unused, so other replicas can have it.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from schemas.limits import Lease, SpendRecord, spend_key
from services.runtime.kvcas import KvCas

LEASE_AHEAD_S = 60.0
RENEW_MARGIN_S = 30.0
"""A lease this close to expiring is replaced rather than renewed (clock skew)."""
ROTATE_S = 300.0
IDLE_S = 2.0
MIN_REQUESTS = 16
MIN_SLOTS = 4
MIN_TOKENS = 1024
MIN_NEXT = 16
"""A token or budget share must cover this many requests like the one asking."""


@dataclass(frozen=True, slots=True)
class KeyLimits:
    """The key's own limits a lease was granted under."""

    rpm: int | None = None
    tpm: int | None = None
    parallel: int | None = None
    max_budget: float | None = None
    period_s: float | None = None

    @property
    def per_minute(self) -> bool:
        return self.rpm is not None or self.tpm is not None


@dataclass(frozen=True, slots=True)
class Ask:
    """One request asking a key's lease for admission."""

    token: str
    limits: KeyLimits
    minute: int
    tokens: int
    """its estimated prompt tokens"""
    worst: float
    """its worst-case cost, USD"""
    lapse: float
    """when its budget hold would lapse"""
    now: float


@dataclass(slots=True, eq=False)
class Local:
    """This process's view of one lease: never more than the record holds."""

    lease_id: str
    limits: KeyLimits
    started: float
    written: bool = False
    retired: bool = False
    expires: float = 0.0
    minute: int = -1
    requests: int = 0
    requests_used: int = 0
    tokens: int = 0
    tokens_used: int = 0
    slots: int = 0
    in_flight: int = 0
    granted: float = 0.0
    admitted: float = 0.0
    last_used: float = 0.0
    seen_requests: int = 0
    """The key's request and token counts as last written (rate headers)."""
    seen_tokens: int = 0


@dataclass(slots=True)
class Taken:
    """What one request took from a lease; its ticket gives it back."""

    token: str
    local: Local
    minute: int
    tokens: int
    worst: float


@dataclass(slots=True)
class _Grant:
    """What the written grant added (the last application of the edit)."""

    minute: int = -1
    requests: int = 0
    tokens: int = 0
    slots: int = 0
    budget: float = 0.0
    expires: float = 0.0
    fresh: bool = False
    seen_requests: int = 0
    seen_tokens: int = 0

    def reset(self) -> None:
        self.minute, self.requests, self.tokens, self.slots = -1, 0, 0, 0
        self.budget, self.expires, self.fresh = 0.0, 0.0, False
        self.seen_requests = self.seen_tokens = 0


Check = Callable[[SpendRecord], Callable[[], None]]


class Leases:
    def __init__(self, spend: KvCas[SpendRecord], share: int) -> None:
        self.spend = spend
        self.share = share
        self.owner = secrets.token_hex(6)
        self._by_key: dict[str, Local] = {}
        self._serial = 0
        self._idle: dict[str, asyncio.TimerHandle] = {}

    # -- admit from a lease ---------------------------------------------------

    def take(self, ask: Ask) -> Taken | None:
        """Admit from this process's lease on the key, or None (write instead)."""
        token, limits, minute, tokens = ask.token, ask.limits, ask.minute, ask.tokens
        worst, lapse, now = ask.worst, ask.lapse, ask.now
        local = self._by_key.get(token)
        if local is None or not local.written or local.limits != limits:
            return None
        if lapse > local.expires or now - local.started > ROTATE_S:
            return None
        if limits.per_minute and local.minute != minute:
            return None
        if limits.rpm is not None and local.requests_used >= local.requests:
            return None
        if limits.tpm is not None and local.tokens_used + tokens > local.tokens:
            return None
        if limits.parallel is not None and local.in_flight >= local.slots:
            return None
        if limits.max_budget is not None and local.admitted + worst > local.granted:
            return None
        local.requests_used += 1
        local.tokens_used += tokens
        local.in_flight += 1
        local.admitted += worst
        local.last_used = now
        return Taken(token, local, minute, tokens, worst)

    def headers(self, taken: Taken, reset_s: float) -> dict[str, str]:
        """OpenAI's ``x-ratelimit-*`` headers as this process sees the key."""
        local, limits = taken.local, taken.local.limits
        reset = f"{max(1, int(reset_s + 0.999))}s"
        out: dict[str, str] = {}
        if limits.rpm is not None:
            left = limits.rpm - local.seen_requests + (local.requests - local.requests_used)
            out["x-ratelimit-limit-requests"] = str(limits.rpm)
            out["x-ratelimit-remaining-requests"] = str(max(0, left))
            out["x-ratelimit-reset-requests"] = reset
        if limits.tpm is not None:
            left = limits.tpm - local.seen_tokens + (local.tokens - local.tokens_used)
            out["x-ratelimit-limit-tokens"] = str(limits.tpm)
            out["x-ratelimit-remaining-tokens"] = str(max(0, left))
            out["x-ratelimit-reset-tokens"] = reset
        return out

    # -- lease more, in the write that admits a request -------------------------

    def grant(self, ask: Ask) -> tuple[Check, Callable[[], None]]:
        """A step for the key's admitting write that leases a share of what is left
        (after this request's own take), and what to call once it is written."""
        token, limits, minute, tokens = ask.token, ask.limits, ask.minute, ask.tokens
        worst, lapse, now = ask.worst, ask.lapse, ask.now
        local = self._current(token, limits, now)
        got = _Grant()
        share = self.share

        def check(rec: SpendRecord) -> Callable[[], None]:
            got.reset()  # each application (a compare-and-set retry) starts afresh

            def change() -> None:
                lease = rec.leases.get(local.lease_id)
                if lease is None:
                    lease = Lease(expires=0.0)
                    got.fresh = True
                if limits.per_minute:
                    _grant_minute(rec, lease, local, got, limits, minute, tokens, share)
                if limits.parallel is not None:
                    unused = max(0, local.slots - local.in_flight) if not got.fresh else 0
                    room = limits.parallel - rec.live_slots(now)
                    got.slots = _share(room + unused, unused, share, MIN_SLOTS, room)
                    lease.slots += got.slots
                if limits.max_budget is not None:
                    unused_b = max(0.0, local.granted - local.admitted) if not got.fresh else 0.0
                    room_b = limits.max_budget - rec.spent - rec.held(now)
                    target = (room_b + unused_b) / share
                    if room_b > 0 and target >= max(worst * MIN_NEXT, 1e-12):
                        got.budget = min(room_b, max(0.0, target - unused_b))
                    lease.granted += got.budget
                if got.fresh and not (got.requests or got.tokens or got.slots or got.budget):
                    return  # nothing worth leasing: no lease
                rec.leases[local.lease_id] = lease
                lease.expires = max(lease.expires, lapse + LEASE_AHEAD_S)
                got.expires = lease.expires

            return change

        def written() -> None:
            self._absorb(token, local, got)

        return check, written

    def _current(self, token: str, limits: KeyLimits, now: float) -> Local:
        local = self._by_key.get(token)
        if local is not None and local.limits == limits and not local.retired:
            fresh_enough = now - local.started <= ROTATE_S
            if not local.written or (fresh_enough and local.expires > now + RENEW_MARGIN_S):
                return local
        if local is not None:
            self._retire(token, local)
        self._serial += 1
        local = Local(lease_id=f"{self.owner}.{self._serial}", limits=limits, started=now)
        self._by_key[token] = local
        return local

    def _absorb(self, token: str, local: Local, got: _Grant) -> None:
        if got.fresh and local.written:  # the record lost the lease: start from the grant
            local.requests = local.tokens = local.slots = 0
            local.granted = local.admitted = 0.0
        local.written = True
        local.expires = max(local.expires, got.expires)
        if got.minute >= 0:
            if local.minute != got.minute:
                local.minute, local.requests_used, local.tokens_used = got.minute, 0, 0
                local.requests, local.tokens = got.requests, got.tokens
            else:
                local.requests += got.requests
                local.tokens += got.tokens
            local.seen_requests, local.seen_tokens = got.seen_requests, got.seen_tokens
        local.slots += got.slots
        local.granted += got.budget
        self._watch_idle(token)

    # -- give back --------------------------------------------------------------

    def finish(self, taken: Taken, *, counted: bool, delta_tokens: int) -> None:
        """A request admitted from a lease is over (``counted`` False: it was refused
        by another check and never ran, so everything it took comes back)."""
        local = taken.local
        local.in_flight = max(0, local.in_flight - 1)
        local.last_used = time.time()
        if not counted:
            local.admitted = max(0.0, local.admitted - taken.worst)
            if local.minute == taken.minute:
                local.requests_used = max(0, local.requests_used - 1)
                local.tokens_used = max(0, local.tokens_used - taken.tokens)
        elif delta_tokens and local.minute == taken.minute:
            local.tokens_used = max(0, local.tokens_used + delta_tokens)
            excess = local.tokens_used - local.tokens
            if local.limits.tpm is not None and excess > 0:  # used more than leased
                local.tokens_used = local.tokens
                self.spend.later(spend_key("key", taken.token), _add_tokens(taken.minute, excess))
        if local.retired:
            if local.in_flight == 0:
                self._give_back(taken.token, local)
        else:
            self._watch_idle(taken.token)

    def give_back_all(self) -> None:
        """On shutdown: return what every lease holds unused."""
        for timer in self._idle.values():
            timer.cancel()
        self._idle.clear()
        for token, local in self._by_key.items():
            self._give_back(token, local)

    def _retire(self, token: str, local: Local) -> None:
        local.retired = True
        self._give_back(token, local)

    def _watch_idle(self, token: str) -> None:
        if token in self._idle:
            return
        loop = asyncio.get_running_loop()
        self._idle[token] = loop.call_later(IDLE_S, self._idle_check, token)

    def _idle_check(self, token: str) -> None:
        del self._idle[token]
        local = self._by_key.get(token)
        if local is None or local.retired:
            return
        idle_for = time.time() - local.last_used
        if idle_for < IDLE_S:
            loop = asyncio.get_running_loop()
            self._idle[token] = loop.call_later(IDLE_S - idle_for, self._idle_check, token)
            return
        self._give_back(token, local)
        if local.in_flight:  # its slots come back once those requests are over
            self._watch_idle(token)

    def _give_back(self, token: str, local: Local) -> None:
        """Return what the lease holds unused: locally at once, then in the record."""
        if not local.written:
            return
        current = int(time.time() // 60)
        requests = tokens = 0
        if local.minute == current:
            requests = max(0, local.requests - local.requests_used)
            tokens = max(0, local.tokens - local.tokens_used)
        local.requests -= requests
        local.tokens -= tokens
        slots = max(0, local.slots - local.in_flight)
        local.slots -= slots
        budget = max(0.0, local.granted - local.admitted)
        local.granted -= budget
        if requests or tokens or slots or budget:
            edit = _lease_back(local.lease_id, local.minute, requests, tokens, slots, budget)
            self.spend.later(spend_key("key", token), edit, 0.0)


def _grant_minute(
    rec: SpendRecord,
    lease: Lease,
    local: Local,
    got: _Grant,
    limits: KeyLimits,
    minute: int,
    tokens: int,
    share: int,
) -> None:
    rec.at_minute(minute)
    if lease.minute != rec.minute:
        lease.minute, lease.requests, lease.tokens = rec.minute, 0, 0
    got.minute = rec.minute
    same = local.minute == rec.minute and not got.fresh
    if limits.rpm is not None:
        unused = max(0, local.requests - local.requests_used) if same else 0
        room = limits.rpm - rec.requests
        got.requests = _share(room + unused, unused, share, MIN_REQUESTS, room)
        rec.requests += got.requests
        lease.requests += got.requests
    if limits.tpm is not None:
        unused = max(0, local.tokens - local.tokens_used) if same else 0
        room = limits.tpm - rec.tokens
        floor = max(MIN_TOKENS, tokens * MIN_NEXT)
        got.tokens = _share(room + unused, unused, share, floor, room)
        rec.tokens += got.tokens
        lease.tokens += got.tokens
    got.seen_requests, got.seen_tokens = rec.requests, rec.tokens


def _share(available: int, unused: int, share: int, floor: int, room: int) -> int:
    """How much more to lease: top the unused part up to 1/share of what is
    available to this process, when that share is worth having."""
    target = available // share
    if target < floor or room <= 0:
        return 0
    return max(0, min(room, target - unused))


def _lease_back(
    lease_id: str, minute: int, requests: int, tokens: int, slots: int, budget: float
) -> Callable[[SpendRecord], None]:
    def edit(rec: SpendRecord) -> None:
        lease = rec.leases.get(lease_id)
        if lease is None:
            return
        if lease.minute == minute and rec.minute == minute:
            lease.requests = max(0, lease.requests - requests)
            lease.tokens = max(0, lease.tokens - tokens)
            rec.requests = max(0, rec.requests - requests)
            rec.tokens = max(0, rec.tokens - tokens)
        lease.slots = max(0, lease.slots - slots)
        lease.granted = max(lease.released, lease.granted - budget)

    return edit


def _add_tokens(minute: int, excess: int) -> Callable[[SpendRecord], None]:
    def edit(rec: SpendRecord) -> None:
        if rec.minute == minute:
            rec.tokens += excess

    return edit
