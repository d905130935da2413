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

All checks of one request run concurrently, and everything of a key's own
(its minute's counts, its slots, its budget) is one record, so a key with
every limit costs one write. When one
check refuses, what the others took is given back. A refused request costs
nothing and is not counted. When the store does not answer within
``limits.store_timeout_s`` the request is refused with 503 (fail closed).
Give-backs (a slot, a token correction) are deferred briefly so that they ride
along with the next request's write to the same record.

A busy key with room to spare is admitted without any write: the ingress
leases a share of the key's capacity in the writes it makes anyway and admits
from the lease in memory (:mod:`services.runtime.leases`). User, team, model
and global scopes are checked per request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from nats.js.kv import KeyValue

from schemas.bus import ReplyMeta
from schemas.keys import TeamRecord, UserRecord
from schemas.limits import Holder, SpendRecord, WindowRecord, spend_key, window_key
from services.runtime import limit_edits as edits
from services.runtime.durations import duration_s
from services.runtime.errors import GatewayError
from services.runtime.kvcas import KvCas
from services.runtime.leases import Ask, KeyLimits, Leases, Taken
from services.runtime.limit_edits import PROMPT_MARGIN, Budget, Window
from services.runtime.principal import Principal
from services.runtime.settings import Settings
from services.runtime.tokens import estimate_prompt_tokens

log = logging.getLogger("igw.admission")

MINUTE = 60
SLOT_GRACE_S = 30.0
"""A slot whose ingress died lapses this long after its request's deadline."""
GIVE_BACK_S = 0.05
"""Give-backs wait at most this long for a write to ride along with."""


@dataclass
class Ticket:
    """What one admitted request holds; :meth:`Admission.finish` gives it back."""

    request_id: str
    estimate_tokens: int
    windows: list[str] = field(default_factory=list)
    """Team, model and global minute counters it was counted in."""
    budgets: list[str] = field(default_factory=list)
    """User and team spend records it holds budget on."""
    key: str | None = None
    """The key's own record, when it took anything there:"""
    key_minute: int | None = None
    slot: bool = False
    key_hold: bool = False
    lease: Taken | None = None
    """What it took from this process's lease on the key, instead of a write."""
    budget_lease: str | None = None
    """The lease its budget hold came from (named on the bus for the settler)."""
    headers: dict[str, str] = field(default_factory=dict)


class Directory(Protocol):
    """Users and teams by id (the ingress's ``KeyStore``, or a batch's own lookup)."""

    @property
    def users(self) -> Mapping[str, UserRecord]: ...

    @property
    def teams(self) -> Mapping[str, TeamRecord]: ...


class Admission:
    def __init__(
        self,
        settings: Settings,
        keys: Directory | None,
        spend: KeyValue,
        limits: KeyValue,
        *,
        leases: bool = False,
    ):
        """``leases``: admit a busy key's requests from capacity leased to this
        process (the ingress; a caller that does not name the lease on the bus
        must leave it off)."""
        timeout = settings.limits.store_timeout_s
        self.settings = settings
        self.keys = keys
        self.spend = KvCas(spend, SpendRecord, timeout)
        self.windows = KvCas(limits, WindowRecord, timeout)
        share = settings.limits.lease_share
        self.leases = Leases(self.spend, share) if leases and share > 0 else None
        self._prices = edits.max_prices(settings)

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
        record = principal.record
        parallel = record.max_parallel_requests if record is not None else None
        if not (windows or budgets or parallel):
            return None
        now = time.time()
        minute = int(now // MINUTE)
        reset = (minute + 1) * MINUTE - now
        tokens = estimate_prompt_tokens(body)
        ticket = Ticket(request_id=request_id, estimate_tokens=tokens)
        worst = self._worst_cost(model, body, tokens) if budgets else 0.0
        hold_lapse = deadline + self.settings.limits.hold_grace_s
        steps: list[Awaitable[None]] = []
        key_steps: list[edits.Step] = []
        own_window: Window | None = None
        own_budget: Budget | None = None
        for w in windows:
            if w.scope == "key":
                own_window = w
                key_steps.append(edits.key_window(w, tokens, minute, reset))
            else:
                steps.append(self._count(ticket, w, tokens, minute, reset))
        if parallel:
            key_steps.append(edits.slot(request_id, parallel, deadline + SLOT_GRACE_S, now))
        for b in budgets:
            hold = edits.hold(request_id, b, worst, hold_lapse, now)
            if b.holder == "key":
                own_budget = b
                key_steps.append(hold)
            else:
                steps.append(self._take(ticket, spend_key(b.holder, b.ident), hold))
        if record is not None and key_steps:
            # everything of the key's own in one record: one write, or none from a lease
            written: Callable[[], None] | None = None
            if self.leases is not None:
                own = KeyLimits(
                    rpm=own_window.rpm if own_window else None,
                    tpm=own_window.tpm if own_window else None,
                    parallel=parallel or None,
                    max_budget=own_budget.max_budget if own_budget else None,
                    period_s=own_budget.period_s if own_budget else None,
                )
                ask = Ask(record.token, own, minute, tokens, worst, hold_lapse, now)
                taken = self.leases.take(ask)
                if taken is not None:
                    key_steps = []
                    ticket.lease = taken
                    ticket.headers.update(self.leases.headers(taken, reset))
                    if own_budget is not None:
                        ticket.budget_lease = taken.local.lease_id
                else:
                    check, written = self.leases.grant(ask)
                    key_steps.append(check)
            if key_steps:
                steps.append(
                    self._take_key(
                        ticket, record.token, key_steps, own_window, minute, reset, written
                    )
                )
        if not steps:
            return ticket
        if len(steps) == 1:  # the usual case: a key's own limits, one write, no task
            try:
                await steps[0]
                return ticket
            except Exception as exc:
                results: list[Any] = [exc]
        else:
            results = await asyncio.gather(*steps, return_exceptions=True)
        refusals = [r for r in results if isinstance(r, BaseException)]
        if refusals:
            self._give_back(ticket, error=True, counted=False)
            raise _first_refusal(refusals)
        return ticket

    async def _count(
        self, ticket: Ticket, w: Window, tokens: int, minute: int, reset: float
    ) -> None:
        key = window_key(w.scope, w.ident, minute)
        await self.windows.change(key, edits.count(w, tokens, reset))
        ticket.windows.append(key)

    async def _take(self, ticket: Ticket, key: str, hold: edits.Step) -> None:
        await self.spend.change(key, edits.key_state(hold))
        ticket.budgets.append(key)

    async def _take_key(
        self,
        ticket: Ticket,
        token: str,
        steps: list[edits.Step],
        window: Window | None,
        minute: int,
        reset: float,
        written: Callable[[], None] | None = None,
    ) -> None:
        key = spend_key("key", token)
        rec = await self.spend.change(key, edits.key_state(*steps))
        if written is not None:
            written()
        ticket.key = key
        ticket.key_minute = minute if window is not None else None
        ticket.slot = rec.slots.get(ticket.request_id) is not None
        ticket.key_hold = ticket.request_id in rec.holds
        if window is not None:
            edits.rate_headers(ticket.headers, window, rec, reset)

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
            "budget_reset_at": None if reset is None else _iso(reset),
        }

    # -- finish -------------------------------------------------------------

    def finish(self, ticket: Ticket, terminal: ReplyMeta | None) -> None:
        """The response is over (``terminal`` is None when the client left or the
        deadline passed): free the slot, correct the token count, and let budget
        holds lapse soon when no usage event may come to settle them."""
        error = terminal is None or terminal.error is not None
        self._give_back(ticket, error=error, counted=True, terminal=terminal)

    def _give_back(
        self,
        ticket: Ticket,
        *,
        error: bool,
        counted: bool,
        terminal: ReplyMeta | None = None,
    ) -> None:
        request_id, tokens = ticket.request_id, ticket.estimate_tokens
        delta = 0
        if counted and terminal is not None and terminal.usage is not None:
            delta = terminal.usage.prompt_tokens + terminal.usage.completion_tokens - tokens
        if ticket.lease is not None:
            self.leases_finish(ticket.lease, counted=counted, delta_tokens=delta)
        later: list[Callable[[SpendRecord], None]] = []
        if ticket.slot:
            later.append(edits.drop_slot(request_id))
        if ticket.key_minute is not None:
            if not counted:
                later.append(edits.key_uncount(ticket.key_minute, tokens))
            elif delta:
                later.append(edits.key_add_tokens(ticket.key_minute, delta))
        for key in ticket.windows:
            if not counted:
                self.windows.later(key, edits.uncount(tokens), GIVE_BACK_S)
            elif delta:
                self.windows.later(key, edits.add_tokens(delta), GIVE_BACK_S)
        if error:
            lapse = time.time() + (self.settings.limits.hold_grace_s if counted else 0.0)
            for key in ticket.budgets:
                self.spend.later(key, edits.lapse_hold(request_id, lapse), GIVE_BACK_S)
            if ticket.key_hold:
                later.append(edits.lapse_hold(request_id, lapse))
        if ticket.key is not None:
            for edit in later:
                self.spend.later(ticket.key, edit, GIVE_BACK_S)

    def leases_finish(self, taken: Taken, *, counted: bool, delta_tokens: int) -> None:
        if self.leases is not None:
            self.leases.finish(taken, counted=counted, delta_tokens=delta_tokens)

    async def close(self) -> None:
        """Give leased capacity back and write the give-backs still queued."""
        if self.leases is not None:
            self.leases.give_back_all()
        await asyncio.gather(self.spend.flush(), self.windows.flush())


def _first_refusal(refusals: list[BaseException]) -> BaseException:
    for exc in refusals:
        if isinstance(exc, GatewayError):
            return exc
    return refusals[0]


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


def _period(text: str | None) -> float | None:
    return duration_s(text, "budget_duration") if text else None
