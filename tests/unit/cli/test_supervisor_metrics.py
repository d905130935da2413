"""``igw up`` with ``metrics.port`` set: each service without an HTTP port of its own
serves /metrics on that port and the next ones; with 0, none does."""

from __future__ import annotations

from rich.console import Console

from services.cli.supervisor import Supervisor
from services.runtime.settings import ModelDeployment, Settings


def plan(port: int) -> Supervisor:
    models = [
        ModelDeployment(alias="a", provider="openai", base_url="http://x/v1", model="m"),
        ModelDeployment(
            alias="b", provider="anthropic", base_url="http://y", model="m", deployment="b"
        ),
    ]
    settings = Settings.model_validate(
        {
            "nats": {"embedded": False},
            "simulator": {"enabled": "false"},
            "metrics": {"port": port},
            "models": [m.model_dump() for m in models],
        }
    )
    supervisor = Supervisor(settings, {"PATH": "/bin"}, Console(quiet=True))
    supervisor.children = supervisor.plan()
    return supervisor


def test_metrics_ports_are_numbered_from_metrics_port() -> None:
    supervisor = plan(9500)
    assert supervisor.metrics_ports == {
        "router": 9500,
        "worker-anthropic": 9501,
        "worker-openai": 9502,
        "accounting": 9503,
        "batcher": 9504,
    }
    env = {c.name: c.env or {} for c in supervisor.children}
    assert env["router"]["IGW_METRICS__PORT"] == "9500"
    assert env["router"]["PATH"] == "/bin"
    assert env["batcher"]["IGW_METRICS__PORT"] == "9504"
    assert "IGW_METRICS__PORT" not in env["ingress"]


def test_no_metrics_port_no_metrics_servers() -> None:
    supervisor = plan(0)
    assert supervisor.metrics_ports == {}
    assert all(c.env is None for c in supervisor.children)
