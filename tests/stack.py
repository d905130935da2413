"""A real IGW deployment for integration tests: nats-server, the provider
simulator and every service as separate processes, configured by a YAML file
written into a temporary directory."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from services.runtime import natsserver
from tests.waiting import wait_until

PRICE = {"input_per_mtok": "0.15", "output_per_mtok": "0.60"}
SERVICES = ("simulator", "router", "worker-openai", "accounting", "ingress")
METRICS_SERVED = frozenset({"router", "worker", "accounting", "batcher"})
"""Commands that serve /metrics on ``metrics.port`` (the ingress: on its HTTP port)."""


def sim_model(alias: str, upstream: str, port: int, **extra: Any) -> dict[str, Any]:
    return {
        "alias": alias,
        "provider": "openai",
        "base_url": f"http://127.0.0.1:{port}/v1",
        "model": upstream,
        "price": PRICE,
        **extra,
    }


@dataclass
class Stack:
    root: Path
    nats_port: int = field(default_factory=natsserver.free_port)
    http_port: int = field(default_factory=natsserver.free_port)
    sim_port: int = field(default_factory=natsserver.free_port)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    extra_models: list[dict[str, Any]] = field(default_factory=list)
    overrides: dict[str, Any] = field(default_factory=dict)
    services: tuple[str, ...] = SERVICES
    replica_ports: dict[str, int] = field(default_factory=dict)
    """HTTP ports of extra ingress replicas ("ingress-2", ...), each its own process."""
    extra_env: dict[str, str] = field(default_factory=dict)
    """Environment variables for every process (``OTEL_*`` for tracing tests, ...)."""
    metrics_ports: dict[str, int] = field(default_factory=dict)
    """``metrics.port`` of each router, worker, accounting and batcher process."""
    nats_nodes: int = 1
    """3: a JetStream cluster on loopback ("nats", "nats-2", "nats-3"), streams and KV R3."""
    nats_specs: dict[str, natsserver.NatsServerSpec] = field(default_factory=dict)

    @property
    def config_path(self) -> Path:
        return self.root / "igw.yaml"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def sim_url(self) -> str:
        return f"http://127.0.0.1:{self.sim_port}"

    @property
    def nats_url(self) -> str:
        """Every node's URL, comma-separated (``nats.url`` takes a cluster's list)."""
        if self.nats_nodes == 1:
            return f"nats://127.0.0.1:{self.nats_port}"
        return ",".join(spec.url for spec in self._nats_cluster().values())

    def write_config(self) -> None:
        p = self.sim_port
        models = [
            sim_model("sim", "sim", p),
            sim_model("sim-slow", "sim?itl_ms=40&tokens=400", p),
            sim_model("sim-500", "sim?fault=500", p),
            sim_model("sim-429", "sim?fault=429&retry_after=7", p),
            sim_model("sim-stall", "sim?fault=stall", p, timeout_s=1.5),
            sim_model("sim-cut", "sim?fault=cut&fault_after=3", p),
            sim_model("sim-malformed", "sim?fault=malformed&fault_after=2", p),
            sim_model("sim-acct", "sim", p),
            sim_model("sim-slow-first", "sim?ttft_ms=15000", p),
            sim_model("sim-3s", "sim?ttft_ms=3000", p),
            sim_model("sim-embed", "sim", p),
            sim_model("sim-echo", "sim?echo=1&tokens=200", p),
            # routing: a group whose first deployment fails, a fallback, a transient 429
            sim_model("sim-group", "sim?fault=500", p, deployment="group-bad"),
            sim_model("sim-group", "sim", p, deployment="group-good"),
            sim_model("sim-fallback", "sim?fault=503", p),
            sim_model("sim-retry", "sim?fault=429&retry_after=0.3&fault_times=1", p),
            sim_model("sim-small", "sim", p, context_window=1000),
            sim_model("sim-refuse", "sim?fault=content_filter", p),
            sim_model("sim-limited", "sim", p, rpm_limit=60),
            sim_model("sim-prio", "sim", p, rpm_limit=60),
            sim_model("sim-hedge", "sim?ttft_ms=4000", p, deployment="hedge-slow"),
            sim_model("sim-hedge", "sim", p, deployment="hedge-fast"),
            sim_model("sim-weighted", "sim", p, deployment="weighted-3", weight=3),
            sim_model("sim-weighted", "sim", p, deployment="weighted-1", weight=1),
            sim_model("sim-latency", "sim?ttft_ms=150", p, deployment="latency-slow"),
            sim_model("sim-latency", "sim", p, deployment="latency-fast"),
            sim_model("sim-hang", "sim?fault=stall", p, deployment="hang-bad", timeout_s=1.0),
            sim_model("sim-hang", "sim", p, deployment="hang-good"),
            sim_model("sim-midcut", "sim?fault=cut&fault_after=3", p, deployment="midcut-bad"),
            sim_model("sim-midcut", "sim", p, deployment="midcut-good"),
            sim_model(
                "sim-midstall",
                "sim?fault=stall&fault_after=2",
                p,
                deployment="midstall-bad",
                timeout_s=1.0,
            ),
            sim_model("sim-midstall", "sim", p, deployment="midstall-good"),
            sim_model("sim-ctx", "sim?fault=context", p, context_window=8192),
            sim_model("sim-long", "sim?echo=1&tokens=100", p, context_window=128000),
            *self.extra_models,
        ]
        config: dict[str, Any] = {
            "data_dir": str(self.root / "data"),
            "server": {"port": self.http_port, "max_body_bytes": 65536, "request_timeout_s": 20},
            "nats": {
                "url": self.nats_url,
                "port": self.nats_port,
                "monitor_port": 0,
                "stream_replicas": min(self.nats_nodes, 3),
            },
            "simulator": {"port": self.sim_port},
            "clickhouse": {"batch_size": 50, "flush_interval_ms": 100},
            "bus": {"usage_ack_wait_s": 3, "work_ack_wait_s": 2},
            "logging": {"level": "INFO"},
            "routing": {
                "auto": {"aliases": ["sim", "sim-echo"]},
                "aliases": {
                    "sim-group": {"strategy": "ordered"},
                    "sim-fallback": {"fallbacks": ["sim-echo"]},
                    "sim-retry": {"retries": 1},
                    "sim-hang": {"strategy": "ordered"},
                    "sim-refuse": {"fallbacks": ["sim-echo"], "retries": 2},
                    "sim-latency": {"strategy": "lowest_latency"},
                    "sim-hedge": {"strategy": "ordered", "hedge": True, "hedge_after_s": 0.3},
                    "sim-midcut": {"strategy": "ordered"},
                    "sim-midstall": {"strategy": "ordered"},
                    "sim-ctx": {"fallbacks": ["sim-long"], "retries": 2},
                },
            },
            "models": models,
        }
        for section, values in self.overrides.items():
            config.setdefault(section, {}).update(values)
        self.config_path.write_text(yaml.safe_dump(config))

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("IGW_")}
        env["IGW_CONFIG"] = str(self.config_path)
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self.extra_env)
        return env

    def start_nats(self) -> None:
        if self.nats_nodes == 1:
            spec = natsserver.NatsServerSpec(
                host="127.0.0.1", port=self.nats_port, store_dir=self.root / "data" / "nats"
            )
            self.procs["nats"] = natsserver.start(spec, self.root / "nats.log")
            return
        for name in self._nats_cluster():
            self.start_nats_node(name)
        for name in self._nats_cluster():
            self.wait_nats_healthy(name)

    def _nats_cluster(self) -> dict[str, natsserver.NatsServerSpec]:
        """The cluster's nodes by process name; their ports stay the same across restarts."""
        if not self.nats_specs:
            ports = [self.nats_port] + [natsserver.free_port() for _ in range(self.nats_nodes - 1)]
            specs = natsserver.cluster("127.0.0.1", ports, self.root / "data" / "nats")
            for n, spec in enumerate(specs, start=1):
                name = "nats" if n == 1 else f"nats-{n}"
                monitor = natsserver.free_port()
                self.nats_specs[name] = dataclasses.replace(spec, monitor_port=monitor)
        return self.nats_specs

    def start_nats_node(self, name: str) -> None:
        self.procs[name] = natsserver.start(self.nats_specs[name], self.root / f"{name}.log")

    def wait_nats_healthy(self, name: str, timeout: float = 30.0) -> None:
        """Until the node's JetStream is healthy (in a cluster: it knows the meta leader)."""
        url = f"http://127.0.0.1:{self.nats_specs[name].monitor_port}/healthz"

        def healthy() -> bool:
            try:
                return httpx.get(url, timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(healthy, timeout, f"{name} to report JetStream healthy")

    def replica_url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.replica_ports[name]}"

    def metrics_url(self, name: str) -> str:
        """Where process ``name`` serves ``/metrics`` (an ingress: on its HTTP port)."""
        if name == "ingress":
            return f"{self.base_url}/metrics"
        if name in self.replica_ports:
            return f"{self.replica_url(name)}/metrics"
        return f"http://127.0.0.1:{self.metrics_ports[name]}/metrics"

    def start(self, name: str) -> None:
        if name in self.nats_specs:
            self.start_nats_node(name)
            return
        env = self.env()
        if name.startswith("worker-"):  # "worker-openai-2": a second worker for openai
            provider = name.split("-")[1]
            args = ["worker", "--provider", provider]
        else:
            args = [name.split("-", 1)[0]]  # "router-2": a second router replica
        if name.startswith("ingress-"):
            port = self.replica_ports.setdefault(name, natsserver.free_port())
            env["IGW_SERVER__PORT"] = str(port)
        if args[0] in METRICS_SERVED:
            port = self.metrics_ports.setdefault(name, natsserver.free_port())
            env["IGW_METRICS__PORT"] = str(port)
        log = open(self.root / f"{name}.log", "ab")  # noqa: SIM115
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "services.cli", *args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.root,
        )

    def start_all(self) -> None:
        self.write_config()
        self.start_nats()
        for name in self.services:
            self.start(name)
        self.wait_ready()

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        checks = {f"{self.base_url}/ready": 200, f"{self.sim_url}/_sim/stats": 200}
        checks.update({f"{self.replica_url(n)}/ready": 200 for n in self.replica_ports})
        checks.update(
            {
                f"http://127.0.0.1:{port}/health": 200
                for name, port in self.metrics_ports.items()
                if name in self.procs
            }
        )
        while checks and time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self.log(name)}")
            for url in list(checks):
                try:
                    if httpx.get(url, timeout=1).status_code == checks[url]:
                        del checks[url]
                except httpx.HTTPError:
                    pass
            time.sleep(0.05)
        if checks:
            raise RuntimeError(f"not ready: {list(checks)}\n{self.logs()}")

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.pop(name)
        proc.send_signal(sig)
        proc.wait(timeout=20)

    def stop_all(self) -> None:
        for name in reversed(list(self.procs)):
            proc = self.procs[name]
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
        self.procs.clear()

    def log(self, name: str) -> str:
        path = self.root / f"{name}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def logs(self) -> str:
        names = dict.fromkeys(("nats", *self.nats_specs, *self.services, *self.replica_ports))
        return "\n".join(f"--- {n}\n{self.log(n)}" for n in names)

    def new_key(self, master: str, **fields: Any) -> str:
        """Mint a virtual key through the admin API (``/key/generate``) with ``master``."""
        reply = httpx.post(
            f"{self.base_url}/key/generate",
            headers={"authorization": f"Bearer {master}"},
            json=fields,
            timeout=10,
        )
        assert reply.status_code == 200, reply.text
        return str(reply.json()["key"])

    def sim_stats(self) -> dict[str, Any]:
        return httpx.get(f"{self.sim_url}/_sim/stats", timeout=5).json()  # type: ignore[no-any-return]

    def sim_wait(self, counter: str, value: int, timeout: float = 10.0) -> dict[str, Any]:
        resp = httpx.get(
            f"{self.sim_url}/_sim/wait",
            params={"counter": counter, "value": value, "timeout": timeout},
            timeout=timeout + 5,
        )
        assert resp.status_code == 200, f"{counter} never reached {value}: {resp.text}"
        return resp.json()  # type: ignore[no-any-return]

    def sql(self, query: str) -> list[list[Any]]:
        out = subprocess.run(
            [sys.executable, "-m", "services.cli", "sql", query, "--format", "json"],
            env=self.env(),
            capture_output=True,
            cwd=self.root,
            timeout=60,
            check=False,
        )
        assert out.returncode == 0, out.stderr.decode() + out.stdout.decode()
        import json

        return json.loads(out.stdout)["rows"]  # type: ignore[no-any-return]
