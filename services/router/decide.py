"""The routing decision, kept behind one function (:func:`decide`).

An alias names a group of deployments (every ``models`` entry with that alias).
The first attempt picks one by the alias's strategy:

* ``weighted`` (default): at random, in proportion to each deployment's ``weight``;
* ``ordered``: the first deployment listed;
* ``lowest_cost``: the lowest price per million input plus output tokens;
* ``lowest_latency``: the lowest moving average of time to first token and total
  time (from the health book; unknown deployments count as fastest, so they get tried);
* ``least_in_flight``: the fewest attempts this router has in flight there.

Only deployments that can serve the request are candidates (tools, images, a
context window large enough for the prompt estimate plus the requested output).
The ``auto`` model considers every healthy chat deployment and takes the lowest
score of ``latency_weight * latency / slowest + cost_weight * price / dearest``
(60/40 by default). Deployments whose circuit breaker is open are not candidates; one whose
cooldown has passed gets a single probe attempt (see :mod:`services.router.health`).

A later attempt (the worker republishes a request whose attempt failed before
its first byte reached the client) prefers a deployment not tried yet: first
in the alias's own group, then in each fallback alias in order (fallbacks of
fallbacks too, never visiting an alias twice). With every candidate tried, the
alias's ``retries`` allow that many more attempts on its own group, after an
exponential, jittered backoff that honours the upstream's ``Retry-After``.
Nothing left, or no time left before the deadline: :class:`NoRoute` carries
the last attempt's error to the client.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from schemas.bus import ErrorInfo, Needs, RouteDecision, RoutingView
from schemas.subjects import work_subject
from services.router.capacity import Capacity
from services.router.health import HealthBook
from services.runtime.errors import InvalidRequest, ModelNotFound, ServiceUnavailable
from services.runtime.settings import AliasRouting, ModelDeployment, RoutingSettings


class NoCapacity(Exception):
    """Every deployment that could serve the request is at its rate limit right now."""

    def __init__(self, wait_s: float) -> None:
        super().__init__(f"no capacity for {wait_s:.2f}s")
        self.wait_s = wait_s


class NoRoute(Exception):
    """No attempt is left for a request; ``error`` is what the client gets."""

    def __init__(self, error: ErrorInfo) -> None:
        super().__init__(error.message)
        self.error = error


@dataclass(frozen=True, slots=True)
class Decision:
    route: RouteDecision
    delay_s: float = 0.0
    probe: bool = False
    """The attempt probes an open circuit breaker (the router claims it fleet-wide)."""


class RoutingTable:
    """Alias to its group of deployments and its routing rules, built once from settings."""

    def __init__(self, models: list[ModelDeployment], routing: RoutingSettings) -> None:
        self._groups: dict[str, list[ModelDeployment]] = {}
        for model in models:
            self._groups.setdefault(model.alias, []).append(model)
        self.routing = routing

    def lookup(self, alias: str) -> ModelDeployment | None:
        group = self._groups.get(alias)
        return group[0] if group else None

    def group(self, alias: str) -> list[ModelDeployment]:
        return self._groups.get(alias, [])

    def rules(self, alias: str) -> AliasRouting:
        return self.routing.for_alias(alias)

    def chain(self, alias: str) -> list[str]:
        """The alias, then its fallbacks depth first, each alias once."""
        out: list[str] = []

        def visit(name: str) -> None:
            if name in out or name not in self._groups:
                return
            out.append(name)
            for fallback in self.rules(name).fallbacks:
                visit(fallback)

        visit(alias)
        return out

    def aliases(self) -> list[str]:
        return sorted(self._groups)


def capable(deployment: ModelDeployment, needs: Needs) -> bool:
    return (
        (deployment.supports_tools or not needs.tools)
        and (deployment.supports_vision or not needs.vision)
        and (deployment.context_window is None or needs.context_tokens <= deployment.context_window)
    )


def _cost(deployment: ModelDeployment) -> float:
    return float(deployment.price.input_per_mtok + deployment.price.output_per_mtok)


def _auto_pick(
    pool: list[ModelDeployment], routing: RoutingSettings, health: HealthBook
) -> ModelDeployment:
    slowest = max(health.latency_ms(d.deployment) for d in pool) or 1.0
    dearest = max(_cost(d) for d in pool) or 1.0
    auto = routing.auto

    def score(d: ModelDeployment) -> float:
        latency = health.latency_ms(d.deployment) / slowest
        return auto.latency_weight * latency + auto.cost_weight * _cost(d) / dearest

    return min(pool, key=score)


def _pick(
    group: list[ModelDeployment], rules: AliasRouting, rng: random.Random, health: HealthBook
) -> ModelDeployment:
    if rules.strategy == "ordered" or len(group) == 1:
        return group[0]
    if rules.strategy == "lowest_cost":
        return min(group, key=lambda d: d.price.input_per_mtok + d.price.output_per_mtok)
    if rules.strategy == "lowest_latency":
        return min(group, key=lambda d: health.latency_ms(d.deployment))
    if rules.strategy == "least_in_flight":
        return min(group, key=lambda d: health.in_flight(d.deployment))
    return rng.choices(group, weights=[d.weight for d in group])[0]


def backoff_s(
    retry: int, routing: RoutingSettings, retry_after: float | None, rng: random.Random
) -> float:
    """Delay before same-deployment retry number ``retry`` (1-based): full jitter on an
    exponential ceiling, never shorter than the upstream's ``Retry-After``."""
    ceiling = min(routing.backoff_max_s, routing.backoff_base_s * 2 ** (retry - 1))
    delay = rng.uniform(ceiling / 2, ceiling)
    return max(delay, retry_after or 0.0)


def _route(request: RoutingView, deployment: ModelDeployment, reason: str) -> RouteDecision:
    return RouteDecision(
        provider=deployment.provider,
        deployment=deployment.deployment,
        upstream_model=deployment.model,
        subject=work_subject(deployment.provider, deployment.deployment),
        attempt=request.attempt,
        reason=reason,
    )


def _exhausted(request: RoutingView, why: str) -> NoRoute:
    if request.last_error is not None:
        return NoRoute(request.last_error)
    return NoRoute(
        ServiceUnavailable(f"no deployment can serve `{request.model}`: {why}").to_info()
    )


def _with_hedge(
    decision: Decision,
    request: RoutingView,
    table: RoutingTable,
    health: HealthBook,
    rules: AliasRouting,
) -> Decision:
    """Arm a hedge: when the first token is later than the deployment's recent p95 time
    to first token (or the alias's ``hedge_after_s``), the worker asks for a second
    attempt elsewhere. Only when another deployment could take it."""
    chosen = decision.route.deployment
    others = [
        d
        for a in table.chain(request.model)
        for d in table.group(a)
        if d.deployment != chosen and capable(d, request.needs)
    ]
    p95 = health.get(chosen).quantile(0.95, ttft=True)
    after = rules.hedge_after_s or (p95 / 1000 if p95 is not None else None)
    if not others or after is None:
        return decision
    route = decision.route.model_copy(update={"hedge_after_s": max(after, HEDGE_MIN_S)})
    return Decision(route, decision.delay_s, decision.probe)


HEDGE_MIN_S = 0.05


def _any(deployment: ModelDeployment) -> bool:
    return True


def _larger_than_failed(
    request: RoutingView, table: RoutingTable
) -> Callable[[ModelDeployment], bool]:
    """After a context-window error, only deployments with a larger (or unknown) window."""
    error = request.last_error
    if error is None or error.code != "context_length_exceeded" or not request.tried:
        return _any
    failed = next(
        (d for a in table.aliases() for d in table.group(a) if d.deployment == request.tried[-1]),
        None,
    )
    if failed is None:
        return _any
    window = failed.context_window
    return lambda d: window is None or d.context_window is None or d.context_window > window


def _incapable(request: RoutingView) -> ErrorInfo:
    needs = request.needs
    wanted = [
        *(["tools"] if needs.tools else []),
        *(["images"] if needs.vision else []),
        f"about {needs.context_tokens} tokens of context",
    ]
    return InvalidRequest(
        f"no deployment of `{request.model}` can serve this request (it needs {', '.join(wanted)})",
        code="no_capable_deployment",
    ).to_info()


def _auto(request: RoutingView, table: RoutingTable, health: HealthBook, clock: float) -> Decision:
    if request.attempt > table.routing.max_attempts:
        raise _exhausted(request, "every attempt was used")
    among = table.routing.auto.aliases or table.aliases()
    chat = [d for a in among for d in table.group(a) if d.kind == "chat"]
    fit = [d for d in chat if capable(d, request.needs)]
    if not fit:
        raise NoRoute(_incapable(request))
    tried = set(request.tried)
    pool = [d for d in fit if d.deployment not in tried and health.available(d.deployment, clock)]
    if not pool:
        raise _exhausted(request, "no healthy deployment is left")
    picked = _auto_pick(pool, table.routing, health)
    probe = health.claim_probe(picked.deployment, clock)
    health.routed(picked.deployment)
    return Decision(_route(request, picked, "auto"), probe=probe)


def _pinned(request: RoutingView, table: RoutingTable) -> Decision:
    """``x-gateway.provider``: the alias's deployments of that provider, in order, each
    tried once; no strategy, breakers or fallbacks."""
    pinned = [d for d in table.group(request.model) if d.provider == request.pin_provider]
    fresh = [d for d in pinned if d.deployment not in request.tried]
    if not fresh or request.attempt > table.routing.max_attempts:
        raise _exhausted(request, f"no deployment of provider {request.pin_provider!r} is left")
    return Decision(_route(request, fresh[0], f"pinned to {request.pin_provider}"))


def decide(
    request: RoutingView,
    table: RoutingTable,
    rng: random.Random | None = None,
    now: Callable[[], float] = time.time,
    health: HealthBook | None = None,
    capacity: Capacity | None = None,
) -> Decision:
    rng = rng or random.Random()
    health = health or HealthBook()
    capacity = capacity or Capacity()
    clock = now()
    tokens = request.needs.context_tokens
    full: list[float] = []
    if table.routing.auto.enabled and request.model == table.routing.auto.alias:
        return _auto(request, table, health, clock)
    if not table.group(request.model):
        raise ModelNotFound(
            f"The model `{request.model}` does not exist or you do not have access to it.",
            param="model",
        )

    def choose(alias: str, exclude: set[str], reason: str) -> Decision | None:
        pool = [
            d
            for d in table.group(alias)
            if d.deployment not in exclude
            and capable(d, request.needs)
            and larger(d)
            and health.available(d.deployment, clock)
        ]
        waits = {d.deployment: capacity.wait_s(d, tokens, clock) for d in pool}
        full.extend(w for w in waits.values() if w > 0)
        pool = [d for d in pool if waits[d.deployment] == 0]
        if not pool:
            return None
        picked = _pick(pool, table.rules(alias), rng, health)
        capacity.take(picked, tokens, clock)
        probe = health.claim_probe(picked.deployment, clock)
        if probe:
            reason = f"{reason}, probing an open breaker"
        health.routed(picked.deployment)
        return Decision(_route(request, picked, reason), probe=probe)

    if request.pin_provider:
        return _pinned(request, table)
    larger = _larger_than_failed(request, table)
    rules = table.rules(request.model)
    if request.attempt <= 1:
        for alias in table.chain(request.model):
            reason = rules.strategy if alias == request.model else f"fallback to {alias}"
            if decision := choose(alias, set(), reason):
                if rules.hedge:
                    return _with_hedge(decision, request, table, health, rules)
                return decision
        if full:
            raise NoCapacity(min(full))
        if not any(
            capable(d, request.needs) for a in table.chain(request.model) for d in table.group(a)
        ):
            raise NoRoute(_incapable(request))
        raise _exhausted(request, "every deployment's circuit breaker is open")
    if request.attempt > table.routing.max_attempts:
        raise _exhausted(request, "every attempt was used")
    tried = set(request.tried)
    for alias in table.chain(request.model):
        reason = "next deployment" if alias == request.model else f"fallback to {alias}"
        if decision := choose(alias, tried, reason):
            return decision
    if full:
        raise NoCapacity(min(full))
    repeats = len(request.tried) - len(tried)
    no_retry = request.hedge or (request.last_error and request.last_error.fallback)
    if repeats >= rules.retries or no_retry:
        raise _exhausted(request, "every deployment was tried")
    retry_after = request.last_error.retry_after if request.last_error else None
    delay = backoff_s(repeats + 1, table.routing, retry_after, rng)
    if request.deadline and clock + delay >= request.deadline:
        raise _exhausted(request, "the deadline leaves no time for another attempt")
    decision = choose(request.model, set(), f"retry {repeats + 1}")
    if decision is None:
        raise _exhausted(request, "every deployment's circuit breaker is open")
    return Decision(decision.route, delay, decision.probe)
