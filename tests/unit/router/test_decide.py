from __future__ import annotations

import pytest

from schemas.bus import RoutingView
from services.router.decide import RoutingTable, decide
from services.runtime.errors import ModelNotFound
from services.runtime.settings import ModelDeployment


def request(model: str, attempt: int = 1) -> RoutingView:
    return RoutingView(
        request_id="req_1", model=model, attempt=attempt, reply_subject="igw.chunks.x.req_1"
    )


TABLE = RoutingTable(
    [
        ModelDeployment(alias="fast", provider="openai", base_url="http://a/v1", model="m-1"),
        ModelDeployment(
            alias="fast",
            provider="openai",
            deployment="fast-b",
            base_url="http://b/v1",
            model="m-2",
        ),
        ModelDeployment(alias="smart", provider="openai", base_url="http://c/v1", model="m-3"),
    ]
)


def test_alias_routes_to_its_deployment_subject() -> None:
    route = decide(request("smart", attempt=2), TABLE)
    assert (route.provider, route.deployment, route.upstream_model) == ("openai", "smart", "m-3")
    assert route.subject == "igw.work.openai.smart"
    assert route.attempt == 2


def test_first_deployment_of_an_alias_wins_until_groups_exist() -> None:
    assert decide(request("fast"), TABLE).deployment == "fast"


def test_unknown_alias() -> None:
    with pytest.raises(ModelNotFound):
        decide(request("nope"), TABLE)
    assert TABLE.aliases() == ["fast", "smart"]
