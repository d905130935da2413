"""``igw up``: one supervised process tree that serves requests, restarts a
crashed child, and stops cleanly on Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import yaml

from services.runtime import natsserver
from tests.waiting import wait_until

pytestmark = pytest.mark.integration


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone for our purposes
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


class Up:
    def __init__(self, root: Path, extra: dict[str, object] | None = None) -> None:
        self.root = root
        self.http_port = natsserver.free_port()
        self.sim_port = natsserver.free_port()
        self.nats_port = natsserver.free_port()
        config = {
            "data_dir": str(root / "data"),
            "server": {"port": self.http_port},
            "nats": {
                "url": f"nats://127.0.0.1:{self.nats_port}",
                "port": self.nats_port,
                "monitor_port": 0,
            },
            "simulator": {"port": self.sim_port},
            **(extra or {}),
        }
        (root / "igw.yaml").write_text(yaml.safe_dump(config))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("IGW_", "OPENAI_"))}
        self.log = open(root / "up.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "--config", str(root / "igw.yaml"), "up"],
            env=env,
            cwd=root,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def ready(self) -> bool:
        assert self.proc.poll() is None, self.output()
        try:
            return httpx.get(f"{self.base}/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def pids(self) -> dict[str, int]:
        path = self.root / "data" / "igw-up.json"
        return json.loads(path.read_text())["children"]  # type: ignore[no-any-return]

    def output(self) -> str:
        return (self.root / "up.log").read_text(errors="replace")


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Up]:
    system = Up(tmp_path)
    try:
        wait_until(system.ready, 90, "igw up to become ready")
        yield system
    finally:
        if system.proc.poll() is None:
            system.proc.kill()
            system.proc.wait()
        for pid in system.pids().values() if (tmp_path / "data" / "igw-up.json").exists() else []:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_up_serves_restarts_a_crashed_child_and_stops_cleanly(up: Up) -> None:
    client = openai.OpenAI(base_url=f"{up.base}/v1", api_key="x", max_retries=0)
    assert (
        client.chat.completions.create(model="sim", messages=[{"role": "user", "content": "hi"}])
        .choices[0]
        .message.content
    )
    wait_until(lambda: "IGW is up" in up.output(), 30, "the start-up banner")

    pids = up.pids()
    assert set(pids) == {
        "nats", "simulator", "router", "worker-openai", "accounting", "batcher", "ingress"
    }  # fmt: skip
    os.kill(pids["router"], signal.SIGKILL)
    wait_until(lambda: up.pids()["router"] != pids["router"], 30, "the router to be restarted")
    assert "router exited with code -9; restarting" in up.output()
    wait_until(up.ready, 30, "readiness after the restart")
    assert (
        client.chat.completions.create(model="sim", messages=[{"role": "user", "content": "again"}])
        .choices[0]
        .message.content
    )

    # NATS itself: restarted on its file store; services reconnect and serve again
    os.kill(up.pids()["nats"], signal.SIGKILL)
    wait_until(lambda: up.pids()["nats"] != pids["nats"], 30, "NATS to be restarted")

    patient = openai.OpenAI(base_url=f"{up.base}/v1", api_key="x", max_retries=0, timeout=10)

    def answers() -> bool:
        try:
            return bool(
                patient.chat.completions.create(
                    model="sim", messages=[{"role": "user", "content": "after nats"}]
                )
                .choices[0]
                .message.content
            )
        except openai.APIError:
            return False

    wait_until(answers, 30, "a request to succeed after NATS restarted")

    children = up.pids()
    up.proc.send_signal(signal.SIGINT)
    assert up.proc.wait(timeout=60) == 0
    assert not [name for name, pid in children.items() if alive(pid)]


def test_up_stops_everything_when_a_child_keeps_crashing(tmp_path: Path) -> None:
    # accounting cannot reach its ClickHouse server, so it exits at every start
    system = Up(tmp_path, {"clickhouse": {"dsn": "http://127.0.0.1:1"}})
    try:
        assert system.proc.wait(timeout=90) == 1
        output = system.output()
        assert "accounting exited with code 1 and keeps failing" in output
        assert "cannot connect to ClickHouse" in output
        assert not [name for name, pid in system.pids().items() if alive(pid)]
    finally:
        if system.proc.poll() is None:
            system.proc.kill()
