"""``igw up``: the whole system as one supervised process tree.

Children run in their own session, so Ctrl-C reaches only the supervisor,
which then stops them in order (ingress first, NATS last). A child that exits
unexpectedly (NATS included: its JetStream store survives, and every service
reconnects) is reported and restarted with backoff; one that keeps crashing
stops the whole tree with a clear message.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from services.cli.local_model import LocalModelServer
from services.runtime import natsserver
from services.runtime.settings import Settings

MAX_RESTARTS = 5
RESTART_WINDOW_S = 60.0
STOP_GRACE_S = 15.0
METRICS_SERVICES = frozenset({"router", "accounting", "batcher"})
"""With the workers: the services whose /metrics is on ``metrics.port`` (+ n)."""


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str] | None = None
    log: str | None = None
    """File name in the data dir for the child's output (default: the supervisor's)."""
    proc: subprocess.Popen[bytes] | None = None
    crashes: deque[float] = field(default_factory=deque)
    restart_at: float | None = None


class Supervisor:
    def __init__(
        self,
        settings: Settings,
        env: dict[str, str],
        console: Console,
        local_model: LocalModelServer | None = None,
    ) -> None:
        self.settings = settings
        self.env = env
        self.console = console
        self.local_model = local_model
        self.children: list[Child] = []
        self.metrics_ports: dict[str, int] = {}
        self._stopping = False

    # ----------------------------------------------------------------- layout

    def plan(self) -> list[Child]:
        py = [sys.executable, "-m", "services.cli"]
        children: list[Child] = []
        if self.settings.nats.embedded:
            spec = self._nats_spec()
            children.append(Child("nats", spec.command(natsserver.find_binary()), log="nats.log"))
        if self.settings.simulator_enabled:
            children.append(Child("simulator", [*py, "simulator"]))
        if self.local_model is not None:
            local = self.local_model
            children.append(
                Child(
                    "local-model",
                    local.command(sys.executable),
                    env=local.env(self.env),
                    log="local-model.log",
                )
            )
        children.append(Child("router", [*py, "router"]))
        children.extend(
            Child(f"worker-{p}", [*py, "worker", "--provider", p]) for p in self.settings.providers
        )
        children.append(Child("accounting", [*py, "accounting"]))
        children.append(Child("batcher", [*py, "batcher"]))
        children.append(Child("ingress", [*py, "ingress"]))
        self._metrics_ports(children)
        return children

    def _metrics_ports(self, children: list[Child]) -> None:
        """With ``metrics.port`` set, the services without an HTTP port of their own serve
        ``/metrics`` on that port and the next ones, in start order (router, workers,
        accounting, batcher); the ingress serves it on its own port."""
        base = self.settings.metrics.port
        if not base:
            return
        served = [c for c in children if c.name in METRICS_SERVICES or c.name.startswith("worker-")]
        for offset, child in enumerate(served):
            child.env = {**(child.env or self.env), "IGW_METRICS__PORT": str(base + offset)}
            self.metrics_ports[child.name] = base + offset

    def _nats_spec(self) -> natsserver.NatsServerSpec:
        nats = self.settings.nats
        return natsserver.NatsServerSpec(
            host=nats.host,
            port=nats.port,
            store_dir=self.settings.nats_store_dir,
            monitor_port=nats.monitor_port,
        )

    # -------------------------------------------------------------------- run

    def run(self) -> int:
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.children = self.plan()
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            for child in self.children:
                self._start(child)
                if child.name == "nats":
                    spec = self._nats_spec()
                    natsserver.wait_until_listening(spec.host, spec.port, 10.0, child.proc)
                if child.name == "local-model" and self.local_model is not None:
                    assert child.proc is not None
                    self.local_model.wait_until_serving(child.proc, self.console.print)
            if self._wait_ready():
                self._banner()
            return self._watch()
        except natsserver.NatsServerError as exc:
            self.console.print(f"[red]NATS did not start:[/] {exc}")
            return 1
        finally:
            self._stop_all()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _write_pids(self) -> None:
        """``<data_dir>/igw-up.json``: which process runs what, for operators and tests."""
        pids = {c.name: c.proc.pid for c in self.children if c.proc is not None}
        state = {"supervisor": os.getpid(), "children": pids}
        (self.settings.data_dir / "igw-up.json").write_text(json.dumps(state, indent=2))

    def _start(self, child: Child) -> None:
        log_file = self.settings.data_dir / child.log if child.log else None
        out = open(log_file, "ab") if log_file else None  # noqa: SIM115
        child.proc = subprocess.Popen(
            child.argv, env=child.env or self.env, start_new_session=True, stdout=out, stderr=out
        )
        child.restart_at = None
        self._write_pids()

    def _watch(self) -> int:
        while not self._stopping:
            now = time.monotonic()
            for child in self.children:
                if child.restart_at is not None:
                    if now >= child.restart_at:
                        self.console.print(f"[yellow]restarting {child.name}[/]")
                        self._start(child)
                    continue
                assert child.proc is not None
                code = child.proc.poll()
                if code is None or self._stopping:
                    continue
                if not self._schedule_restart(child, code, now):
                    return 1
            time.sleep(0.2)
        return 0

    def _schedule_restart(self, child: Child, code: int, now: float) -> bool:
        while child.crashes and now - child.crashes[0] > RESTART_WINDOW_S:
            child.crashes.popleft()
        child.crashes.append(now)
        if len(child.crashes) > MAX_RESTARTS:
            self.console.print(
                f"[red]{child.name} exited with code {code} and keeps failing "
                f"({len(child.crashes)} times in {RESTART_WINDOW_S:.0f}s); stopping IGW. "
                "See its log lines above.[/]"
            )
            return False
        delay = min(5.0, 0.5 * 2 ** (len(child.crashes) - 1))
        self.console.print(
            f"[yellow]{child.name} exited with code {code}; restarting in {delay:.1f}s[/]"
        )
        child.restart_at = now + delay
        return True

    def _wait_ready(self, timeout: float = 60.0) -> bool:
        url = f"http://{self._http_host()}:{self.settings.server.port}/ready"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self._stopping:
            if any(c.proc is not None and c.proc.poll() is not None for c in self.children):
                return False
            try:
                with urllib.request.urlopen(url, timeout=1) as resp:
                    if resp.status == 200:
                        return True
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        return False

    def _banner(self) -> None:
        base = f"http://{self._http_host()}:{self.settings.server.port}"
        aliases = ", ".join(sorted(self.settings.aliases()))
        self.console.print(f"[bold green]IGW is up[/] at {base}/v1  (models: {aliases})")
        self.console.print(
            f"  data in {self.settings.data_dir.resolve()}  ·  NATS at {self.settings.nats.url}"
        )
        if self.settings.simulator_enabled:
            self.console.print(
                f"  provider simulator at {self.settings.simulator.url} (no provider keys set)"
            )
        if self.local_model is not None:
            self.console.print(
                f"  local model {self.local_model.gguf.name} at {self.local_model.url} "
                "(alias 'local', llama-cpp-python)"
            )
        if self.metrics_ports:
            host = self.settings.metrics.host
            ports = ", ".join(f"{name} :{port}" for name, port in self.metrics_ports.items())
            self.console.print(f"  metrics at {base}/metrics and /metrics on {host}: {ports}")
        self.console.print("  Ctrl-C stops everything.")

    def _http_host(self) -> str:
        host = self.settings.server.host
        return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host

    # ------------------------------------------------------------------- stop

    def _on_signal(self, signum: int, frame: object) -> None:
        if not self._stopping:
            self.console.print("\nstopping IGW ...")
        self._stopping = True

    def _stop_all(self) -> None:
        self._stopping = True
        for child in reversed(self.children):
            _terminate(child, STOP_GRACE_S, self.console.print)


def _terminate(child: Child, grace: float, say: Callable[[str], None]) -> None:
    proc = child.proc
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        say(f"{child.name} did not stop within {grace:.0f}s; killing it")
        proc.kill()
        proc.wait()


def child_env(config_path: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    if config_path is not None:
        env["IGW_CONFIG"] = str(config_path.resolve())
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env
