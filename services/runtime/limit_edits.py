"""The changes admission makes to limit records: pure functions of a record,
applied by compare-and-set (:mod:`services.runtime.kvcas`). Each either changes
the record or raises the refusal the client will see, leaving it unchanged
apart from dropping lapsed entries."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from schemas.limits import Hold, Holder, Scope, SpendRecord, WindowRecord
from services.runtime.errors import BudgetExceeded, RateLimited
from services.runtime.settings import ModelDeployment, Settings

PROMPT_MARGIN = 1.5
"""Budget holds assume the prompt may be this much longer than its estimate (the
estimate counts characters, an upstream's tokenizer may count more tokens)."""


@dataclass(frozen=True, slots=True)
class Window:
    scope: Scope
    ident: str
    rpm: int | None
    tpm: int | None


@dataclass(frozen=True, slots=True)
class Budget:
    holder: Holder
    ident: str
    max_budget: float
    period_s: float | None


def count(w: Window, tokens: int, reset: float) -> Callable[[WindowRecord], WindowRecord]:
    """Count one request and its estimated tokens in a minute, or refuse with 429."""

    def edit(rec: WindowRecord) -> WindowRecord:
        refusal = None
        if w.rpm is not None and rec.requests >= w.rpm:
            refusal = f"{w.scope} requests-per-minute limit ({w.rpm}) reached"
        elif w.tpm is not None and rec.tokens and rec.tokens + tokens > w.tpm:
            refusal = f"{w.scope} tokens-per-minute limit ({w.tpm}) reached"
        if refusal is not None:
            exc = RateLimited(
                refusal + "; retry after the window resets", retry_after=max(1.0, reset)
            )
            rate_headers(exc.headers, w, rec, reset)
            raise exc
        rec.requests += 1
        rec.tokens += tokens
        return rec.model_copy()

    return edit


Step = Callable[[SpendRecord], Callable[[], None]]
"""One check on a key's record: raises the refusal, or returns the change to make."""


def key_state(*steps: Step) -> Callable[[SpendRecord], SpendRecord]:
    """Every step's check, then every step's change: one refusal changes nothing."""

    def edit(rec: SpendRecord) -> SpendRecord:
        changes = [step(rec) for step in steps]
        for change in changes:
            change()
        return rec.model_copy()

    return edit


def key_window(w: Window, tokens: int, minute: int, reset: float) -> Step:
    """A key's requests and tokens this minute (kept in its own record)."""

    def check(rec: SpendRecord) -> Callable[[], None]:
        rec.at_minute(minute)
        counts = WindowRecord(requests=rec.requests, tokens=rec.tokens)
        count(w, tokens, reset)(counts)  # raises the refusal, with its headers

        def change() -> None:
            rec.requests, rec.tokens = counts.requests, counts.tokens

        return change

    return check


def slot(request_id: str, parallel: int, lapse: float, now: float) -> Step:
    def check(rec: SpendRecord) -> Callable[[], None]:
        rec.prune(now)
        if rec.live_slots(now) >= parallel:
            raise RateLimited(
                f"this key already has {parallel} requests in flight (max_parallel_requests)",
                code="parallel_request_limit_reached",
                retry_after=1.0,
            )

        def change() -> None:
            rec.slots[request_id] = lapse

        return change

    return check


def hold(request_id: str, budget: Budget, amount: float, lapse: float, now: float) -> Step:
    """Hold ``amount`` against the budget, or refuse with 402."""

    def check(rec: SpendRecord) -> Callable[[], None]:
        rec.prune(now)
        rec.period_s = budget.period_s
        rec.roll(now)
        held = rec.held(now)
        if rec.spent + held + amount > budget.max_budget:
            raise BudgetExceeded(
                f"the {budget.holder}'s budget is exhausted: spent ${rec.spent:.6f}"
                f" (plus ${held:.6f} held by requests in flight) of"
                f" ${budget.max_budget:.6f}; this request may cost up to ${amount:.6f}"
            )

        def change() -> None:
            rec.holds[request_id] = Hold(amount=amount, expires=lapse)

        return change

    return check


def drop_slot(request_id: str) -> Callable[[SpendRecord], None]:
    def edit(rec: SpendRecord) -> None:
        rec.slots.pop(request_id, None)

    return edit


def lapse_hold(request_id: str, lapse: float) -> Callable[[SpendRecord], None]:
    """Let a hold go at ``lapse`` (now or past: at once) unless settled before."""

    def edit(rec: SpendRecord) -> None:
        hold = rec.holds.get(request_id)
        if hold is None:
            return
        if lapse <= time.time():
            del rec.holds[request_id]
        else:
            hold.expires = min(hold.expires, lapse)

    return edit


def uncount(tokens: int) -> Callable[[WindowRecord], None]:
    def edit(rec: WindowRecord) -> None:
        rec.requests = max(0, rec.requests - 1)
        rec.tokens = max(0, rec.tokens - tokens)

    return edit


def add_tokens(delta: int) -> Callable[[WindowRecord], None]:
    def edit(rec: WindowRecord) -> None:
        rec.tokens = max(0, rec.tokens + delta)

    return edit


def key_uncount(minute: int, tokens: int) -> Callable[[SpendRecord], None]:
    def edit(rec: SpendRecord) -> None:
        if rec.minute == minute:
            rec.requests = max(0, rec.requests - 1)
            rec.tokens = max(0, rec.tokens - tokens)

    return edit


def key_add_tokens(minute: int, delta: int) -> Callable[[SpendRecord], None]:
    def edit(rec: SpendRecord) -> None:
        if rec.minute == minute:
            rec.tokens = max(0, rec.tokens + delta)

    return edit


def rate_headers(
    headers: dict[str, str], w: Window, rec: WindowRecord | SpendRecord, reset: float
) -> None:
    """OpenAI's ``x-ratelimit-*`` headers for one window."""
    reset_text = f"{math.ceil(reset)}s"
    if w.rpm is not None:
        headers["x-ratelimit-limit-requests"] = str(w.rpm)
        headers["x-ratelimit-remaining-requests"] = str(max(0, w.rpm - rec.requests))
        headers["x-ratelimit-reset-requests"] = reset_text
    if w.tpm is not None:
        headers["x-ratelimit-limit-tokens"] = str(w.tpm)
        headers["x-ratelimit-remaining-tokens"] = str(max(0, w.tpm - rec.tokens))
        headers["x-ratelimit-reset-tokens"] = reset_text


def max_prices(settings: Settings) -> dict[str, tuple[float, float, int]]:
    """Per alias (and ``*`` for ``auto`` or unknown): the highest input and output
    price per million tokens among its deployments and fallbacks, and its output
    allowance when a request names no ``max_tokens``."""
    table: dict[str, tuple[float, float, int]] = {}

    def merge(name: str, m: ModelDeployment) -> None:
        i, o, d = table.get(name, (0.0, 0.0, 0))
        table[name] = (
            max(i, float(m.price.input_per_mtok)),
            max(o, float(m.price.output_per_mtok)),
            max(d, m.default_max_tokens),
        )

    for m in settings.models:
        merge(m.alias, m)
        merge("*", m)
    table.setdefault("*", (0.0, 0.0, 4096))
    for alias, rules in settings.routing.aliases.items():
        for fallback in rules.fallbacks:
            if fallback in table and alias in table:
                a, f = table[alias], table[fallback]
                table[alias] = (max(a[0], f[0]), max(a[1], f[1]), max(a[2], f[2]))
    return table
