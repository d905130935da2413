"""The routing decision, kept behind one function so smarter strategies can
replace it without touching the consumer."""

from __future__ import annotations

from schemas.bus import RouteDecision, RoutingView
from schemas.subjects import work_subject
from services.runtime.errors import ModelNotFound
from services.runtime.settings import ModelDeployment


class RoutingTable:
    """Alias to deployment, built once from settings."""

    def __init__(self, models: list[ModelDeployment]) -> None:
        self._by_alias: dict[str, ModelDeployment] = {}
        for model in models:
            self._by_alias.setdefault(model.alias, model)

    def lookup(self, alias: str) -> ModelDeployment | None:
        return self._by_alias.get(alias)

    def aliases(self) -> list[str]:
        return sorted(self._by_alias)


def decide(request: RoutingView, table: RoutingTable) -> RouteDecision:
    deployment = table.lookup(request.model)
    if deployment is None:
        raise ModelNotFound(
            f"The model `{request.model}` does not exist or you do not have access to it.",
            param="model",
        )
    return RouteDecision(
        provider=deployment.provider,
        deployment=deployment.deployment,
        upstream_model=deployment.model,
        subject=work_subject(deployment.provider, deployment.deployment),
        attempt=request.attempt,
        reason="alias",
    )
