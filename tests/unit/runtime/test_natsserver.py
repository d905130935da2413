"""nats-server command lines: one node, and a cluster on one host."""

from __future__ import annotations

from pathlib import Path

from services.runtime import natsserver


def test_a_single_node_has_no_cluster_flags(tmp_path: Path) -> None:
    spec = natsserver.NatsServerSpec(host="127.0.0.1", port=4222, store_dir=tmp_path)
    assert "--cluster" not in spec.command("nats-server")


def test_every_cluster_node_routes_to_the_others(tmp_path: Path) -> None:
    nodes = natsserver.cluster("127.0.0.1", [4301, 4302, 4303], tmp_path)
    assert [n.server_name for n in nodes] == ["igw-1", "igw-2", "igw-3"]
    assert len({n.store_dir for n in nodes}) == 3
    assert len({n.cluster_port for n in nodes}) == 3
    for node in nodes:
        cmd = node.command("nats-server")
        assert cmd[cmd.index("--cluster") + 1] == f"nats://127.0.0.1:{node.cluster_port}"
        routes = cmd[cmd.index("--routes") + 1].split(",")
        others = {f"nats-route://127.0.0.1:{n.cluster_port}" for n in nodes if n is not node}
        assert set(routes) == others
        assert cmd[cmd.index("-n") + 1] == node.server_name
