"""Admission: budgets and rate limits, checked before a request reaches the bus.

Every check is a compare-and-set on a NATS KV record shared by all ingress
replicas (see :mod:`schemas.limits`), so a limit of L admits at most L
fleet-wide:

- **rate limits** per key, team, model and globally: requests and tokens per
  minute (the prompt estimate counts at admission, the real total once known);
- **parallel requests** per key: a slot held until the response is over;
- **budgets** per key, user and team: the worst-case cost (prompt estimate plus
  the output allowance at the alias's highest prices) is held before dispatch.
  The spend settler (accounting) adds the real cost from the usage event and
  drops the hold in the same write; a request that ends in an error has its
  holds lapse after ``limits.hold_grace_s`` in case no usage event follows.

All checks of one request run concurrently; when one refuses, what the others
took is given back. A refused request costs nothing and is not counted. When
the store does not answer within ``limits.store_timeout_s`` the request is
refused with 503 (fail closed).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from nats.js.kv import KeyValue

from schemas.bus import ReplyMeta
from schemas.keys import TeamRecord, UserRecord
from schemas.limits import (
    Hold,
    Holder,
    Scope,
    SlotRecord,
    SpendRecord,
    WindowRecord,
    slots_key,
    spend_key,
    window_key,
)
from services.ingress.auth import KeyStore, Principal
from services.runtime.durations import duration_s
from services.runtime.errors import BudgetExceeded, GatewayError, RateLimited
from services.runtime.kvcas import KvCas
from services.runtime.settings import ModelDeployment, Settings
from services.runtime.tokens import estimate_prompt_tokens

log = logging.getLogger("igw.ingress.admission")

MINUTE = 60
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


@dataclass
class Ticket:
    """What one admitted request holds; :meth:`Admission.finish` gives it back."""

    request_id: str
    estimate_tokens: int
    windows: list[str] = field(default_factory=list)
    slot: str | None = None
    budgets: list[str] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not (self.windows or self.slot or self.budgets)


class Admission:
    def __init__(
        self, settings: Settings, keys: KeyStore | None, spend: KeyValue, limits: KeyValue
    ):
        timeout = settings.limits.store_timeout_s
        self.settings = settings
        self.keys = keys
        self.spend = KvCas(spend, SpendRecord, timeout)
        self.slots = KvCas(spend, SlotRecord, timeout)
        self.windows = KvCas(limits, WindowRecord, timeout)
        self._prices = _max_prices(settings)
        self._background: set[asyncio.Task[None]] = set()

    # -- what applies -------------------------------------------------------

    def _windows(self, principal: Principal, model: str) -> list[Window]:
        out: list[Window] = []
        limits = self.settings.limits
        record = principal.record
        if record is not None and (record.rpm_limit or record.tpm_limit):
            out.append(Window("key", record.token, record.rpm_limit, record.tpm_limit))
        team = self._team(principal)
        if team is not None and (team.rpm_limit or team.tpm_limit):
            out.append(Window("team", team.team_id, team.rpm_limit, team.tpm_limit))
        per_model = limits.models.get(model)
        if per_model is not None and (per_model.rpm or per_model.tpm):
            out.append(Window("model", model, per_model.rpm, per_model.tpm))
        if limits.global_rpm or limits.global_tpm:
            out.append(Window("global", "all", limits.global_rpm, limits.global_tpm))
        return out

    def _budgets(self, principal: Principal) -> list[Budget]:
        out: list[Budget] = []
        key = principal.record
        if key is not None and key.max_budget is not None:
            out.append(Budget("key", key.token, key.max_budget, _period(key.budget_duration)))
        user = self._user(principal)
        if user is not None and user.max_budget is not None:
            out.append(Budget("user", user.user_id, user.max_budget, _period(user.budget_duration)))
        team = self._team(principal)
        if team is not None and team.max_budget is not None:
            out.append(Budget("team", team.team_id, team.max_budget, _period(team.budget_duration)))
        return out

    def _user(self, principal: Principal) -> UserRecord | None:
        if self.keys is None or principal.user_id is None:
            return None
        return self.keys.users.get(principal.user_id)

    def _team(self, principal: Principal) -> TeamRecord | None:
        if self.keys is None or principal.team_id is None:
            return None
        return self.keys.teams.get(principal.team_id)

    # -- admit --------------------------------------------------------------

    async def admit(
        self,
        principal: Principal,
        model: str,
        body: dict[str, Any],
        request_id: str,
        deadline: float,
    ) -> Ticket | None:
        """Take what the request needs, or raise the refusal (429, 402, 503).

        None when no limit applies: the common open-gateway path costs nothing.
        """
        windows = self._windows(principal, model)
        budgets = self._budgets(principal)
        parallel = principal.record.max_parallel_requests if principal.record else None
        if not (windows or budgets or parallel):
            return None
        now = time.time()
        tokens = estimate_prompt_tokens(body)
        ticket = Ticket(request_id=request_id, estimate_tokens=tokens)
        steps: list[Awaitable[None]] = [self._count(ticket, w, tokens, now) for w in windows]
        if parallel and principal.record is not None:
            steps.append(self._slot(ticket, principal.record.token, parallel, deadline, now))
        if budgets:
            worst = self._worst_cost(model, body, tokens)
            grace = self.settings.limits.hold_grace_s
            steps.extend(self._hold(ticket, b, worst, deadline + grace, now) for b in budgets)
        results = await asyncio.gather(*steps, return_exceptions=True)
        refusals = [r for r in results if isinstance(r, BaseException)]
        if refusals:
            self._spawn(self._give_back(ticket, error=True, counted=False))
            raise _first_refusal(refusals)
        return ticket

    async def _count(self, ticket: Ticket, w: Window, tokens: int, now: float) -> None:
        minute = int(now // MINUTE)
        key = window_key(w.scope, w.ident, minute)
        reset = (minute + 1) * MINUTE - now

        def take(rec: WindowRecord) -> WindowRecord:
            refusal = None
            if w.rpm is not None and rec.requests >= w.rpm:
                refusal = f"{w.scope} requests-per-minute limit ({w.rpm}) reached"
            elif w.tpm is not None and rec.tokens and rec.tokens + tokens > w.tpm:
                refusal = f"{w.scope} tokens-per-minute limit ({w.tpm}) reached"
            if refusal is not None:
                exc = RateLimited(refusal + "; retry after the window resets",
                                  retry_after=max(1.0, reset))  # fmt: skip
                _rate_headers(exc.headers, w, rec, reset)
                raise exc
            rec.requests += 1
            rec.tokens += tokens
            return rec.model_copy()

        rec = await self.windows.change(key, take)
        ticket.windows.append(key)
        if w.scope == "key":
            _rate_headers(ticket.headers, w, rec, reset)

    async def _slot(
        self, ticket: Ticket, token: str, limit: int, deadline: float, now: float
    ) -> None:
        key = slots_key(token)
        lapse = deadline + 30.0

        def take(rec: SlotRecord) -> None:
            rec.prune(now)
            if rec.live(now) >= limit:
                raise RateLimited(
                    f"this key already has {limit} requests in flight (max_parallel_requests)",
                    code="parallel_request_limit_reached",
                    retry_after=1.0,
                )
            rec.holds[ticket.request_id] = lapse

        await self.slots.change(key, take)
        ticket.slot = key

    async def _hold(
        self, ticket: Ticket, b: Budget, amount: float, lapse: float, now: float
    ) -> None:
        key = spend_key(b.holder, b.ident)

        def take(rec: SpendRecord) -> None:
            rec.period_s = b.period_s
            rec.roll(now)
            rec.prune(now)
            if rec.spent + rec.held(now) + amount > b.max_budget:
                raise BudgetExceeded(
                    f"the {b.holder}'s budget is exhausted: spent ${rec.spent:.6f}"
                    f" (plus ${rec.held(now):.6f} held by requests in flight) of"
                    f" ${b.max_budget:.6f}; this request may cost up to ${amount:.6f}",
                    param=None,
                )
            rec.holds[ticket.request_id] = Hold(amount=amount, expires=lapse)

        await self.spend.change(key, take)
        ticket.budgets.append(key)

    def _worst_cost(self, model: str, body: dict[str, Any], prompt_tokens: int) -> float:
        input_rate, output_rate, default_out = self._prices.get(model, self._prices["*"])
        out = body.get("max_completion_tokens") or body.get("max_tokens")
        output = out if isinstance(out, int) and out > 0 else default_out
        return (prompt_tokens * PROMPT_MARGIN * input_rate + output * output_rate) / 1_000_000

    async def spend_of(self, holder: Holder, ident: str) -> dict[str, Any]:
        """What the admin API shows: settled spend in the current budget period,
        the amount held by requests in flight, and when the period resets."""
        try:
            record, _ = await self.spend.read(spend_key(holder, ident))
        except Exception as exc:  # the store is down: show what is known, say so
            log.warning("could not read spend: %s", exc)
            return {"spend": None, "spend_held": None, "budget_reset_at": None}
        now = time.time()
        record.roll(now)
        reset = record.resets_at()
        return {
            "spend": round(record.spent, 9),
            "spend_held": round(record.held(now), 9),
            "budget_reset_at": None
            if reset is None
            else datetime.fromtimestamp(reset, UTC).isoformat(),
        }

    # -- finish -------------------------------------------------------------

    def finish(self, ticket: Ticket, terminal: ReplyMeta | None) -> None:
        """The response is over (``terminal`` is None when the client left or the
        deadline passed): free the slot, correct the token count, and let budget
        holds lapse soon when no usage event may come to settle them."""
        error = terminal is None or terminal.error is not None
        self._spawn(self._give_back(ticket, error=error, counted=True, terminal=terminal))

    async def _give_back(
        self,
        ticket: Ticket,
        *,
        error: bool,
        counted: bool,
        terminal: ReplyMeta | None = None,
    ) -> None:
        steps: list[Awaitable[Any]] = []
        request_id = ticket.request_id
        if ticket.slot is not None:
            steps.append(self.slots.change(ticket.slot, _drop_slot(request_id)))
        if not counted:
            for key in ticket.windows:
                steps.append(self.windows.change(key, _uncount(ticket.estimate_tokens)))
        elif terminal is not None and terminal.usage is not None:
            actual = terminal.usage.prompt_tokens + terminal.usage.completion_tokens
            delta = actual - ticket.estimate_tokens
            for key in ticket.windows:
                steps.append(self.windows.change(key, _add_tokens(delta)))
        if error:
            lapse = time.time() + (self.settings.limits.hold_grace_s if counted else 0.0)
            for key in ticket.budgets:
                steps.append(self.spend.change(key, _lapse_hold(request_id, lapse)))
        for outcome in await asyncio.gather(*steps, return_exceptions=True):
            if isinstance(outcome, BaseException):
                log.warning("could not give back what %s held: %s", request_id, outcome)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def _drop_slot(request_id: str) -> Callable[[SlotRecord], None]:
    def edit(rec: SlotRecord) -> None:
        rec.holds.pop(request_id, None)
        rec.prune(time.time())

    return edit


def _uncount(tokens: int) -> Callable[[WindowRecord], None]:
    def edit(rec: WindowRecord) -> None:
        rec.requests = max(0, rec.requests - 1)
        rec.tokens = max(0, rec.tokens - tokens)

    return edit


def _add_tokens(delta: int) -> Callable[[WindowRecord], None]:
    def edit(rec: WindowRecord) -> None:
        rec.tokens = max(0, rec.tokens + delta)

    return edit


def _lapse_hold(request_id: str, lapse: float) -> Callable[[SpendRecord], None]:
    def edit(rec: SpendRecord) -> None:
        hold = rec.holds.get(request_id)
        if hold is not None:
            if lapse <= time.time():
                del rec.holds[request_id]
            else:
                hold.expires = min(hold.expires, lapse)

    return edit


def _first_refusal(refusals: list[BaseException]) -> BaseException:
    for exc in refusals:
        if isinstance(exc, GatewayError):
            return exc
    return refusals[0]


def _rate_headers(headers: dict[str, str], w: Window, rec: WindowRecord, reset: float) -> None:
    reset_text = f"{math.ceil(reset)}s"
    if w.rpm is not None:
        headers["x-ratelimit-limit-requests"] = str(w.rpm)
        headers["x-ratelimit-remaining-requests"] = str(max(0, w.rpm - rec.requests))
        headers["x-ratelimit-reset-requests"] = reset_text
    if w.tpm is not None:
        headers["x-ratelimit-limit-tokens"] = str(w.tpm)
        headers["x-ratelimit-remaining-tokens"] = str(max(0, w.tpm - rec.tokens))
        headers["x-ratelimit-reset-tokens"] = reset_text


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


def _period(text: str | None) -> float | None:
    return duration_s(text, "budget_duration") if text else None


def _max_prices(settings: Settings) -> dict[str, tuple[float, float, int]]:
    """Per alias (and ``*`` for ``auto`` or unknown): the highest input and output
    price per million tokens among its deployments, and its output allowance."""
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
