"""The routing decision, kept behind one function (:func:`decide`).

An alias names a group of deployments (every ``models`` entry with that alias).
The first attempt picks one by the alias's strategy:

* ``weighted`` (default): at random, in proportion to each deployment's ``weight``;
* ``ordered``: the first deployment listed;
* ``lowest_cost``: the lowest price per million input plus output tokens.

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

from schemas.bus import ErrorInfo, RouteDecision, RoutingView
from schemas.subjects import work_subject
from services.runtime.errors import ModelNotFound, ServiceUnavailable
from services.runtime.settings import AliasRouting, ModelDeployment, RoutingSettings


class NoRoute(Exception):
    """No attempt is left for a request; ``error`` is what the client gets."""

    def __init__(self, error: ErrorInfo) -> None:
        super().__init__(error.message)
        self.error = error


@dataclass(frozen=True, slots=True)
class Decision:
    route: RouteDecision
    delay_s: float = 0.0


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


def _pick(group: list[ModelDeployment], rules: AliasRouting, rng: random.Random) -> ModelDeployment:
    if rules.strategy == "ordered" or len(group) == 1:
        return group[0]
    if rules.strategy == "lowest_cost":
        return min(group, key=lambda d: d.price.input_per_mtok + d.price.output_per_mtok)
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


def decide(
    request: RoutingView,
    table: RoutingTable,
    rng: random.Random | None = None,
    now: Callable[[], float] = time.time,
) -> Decision:
    rng = rng or random.Random()
    group = table.group(request.model)
    if not group:
        raise ModelNotFound(
            f"The model `{request.model}` does not exist or you do not have access to it.",
            param="model",
        )
    rules = table.rules(request.model)
    if request.attempt <= 1:
        return Decision(_route(request, _pick(group, rules, rng), rules.strategy))
    if request.attempt > table.routing.max_attempts:
        raise _exhausted(request, "every attempt was used")
    tried = set(request.tried)
    for alias in table.chain(request.model):
        fresh = [d for d in table.group(alias) if d.deployment not in tried]
        if fresh:
            reason = "next deployment" if alias == request.model else f"fallback to {alias}"
            return Decision(_route(request, _pick(fresh, table.rules(alias), rng), reason))
    repeats = len(request.tried) - len(tried)
    if repeats >= rules.retries:
        raise _exhausted(request, "every deployment was tried")
    retry_after = request.last_error.retry_after if request.last_error else None
    delay = backoff_s(repeats + 1, table.routing, retry_after, rng)
    if request.deadline and now() + delay >= request.deadline:
        raise _exhausted(request, "the deadline leaves no time for another attempt")
    return Decision(_route(request, _pick(group, rules, rng), f"retry {repeats + 1}"), delay)
