"""``igw batch`` through real NATS: submit and follow a batch with a progress bar,
download its results, list it, read its status; a bad file is refused naming its
line; Ctrl-C stops waiting but not the batch; cancel stops a slow one."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.stack import SERVICES, Stack

pytestmark = pytest.mark.integration

MASTER = "sk-master-batch-cli-0123456789"
BATCH_ID = re.compile(r"batch_[0-9a-f]{32}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root: Path = tmp_path_factory.mktemp("igw-batch-cli")
    deployment = Stack(root, services=(*SERVICES, "batcher"))
    deployment.overrides = {"auth": {"master_key": MASTER}, "batch": {"max_in_flight": 4}}
    try:
        deployment.start_all()
        yield deployment
    finally:
        deployment.stop_all()


def command(stack: Stack, key: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "services.cli", *args, "--url", stack.base_url, "--key", key]


def cli(stack: Stack, key: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command(stack, key, *args),
        env=stack.env(),
        capture_output=True,
        text=True,
        cwd=stack.root,
        timeout=90,
        check=False,
    )


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stderr + done.stdout
    return done.stdout


@pytest.fixture(scope="module")
def key(stack: Stack) -> str:
    """A user key minted with ``igw keys create`` (batches run and are billed under it)."""
    return str(json.loads(ok(cli(stack, MASTER, "keys", "create")))["key"])


def write_jsonl(path: Path, count: int, model: str = "sim", prefix: str = "req") -> Path:
    lines = [
        {
            "custom_id": f"{prefix}-{n}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": f"item {n}"}]},
        }
        for n in range(count)
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def status(stack: Stack, key: str, batch_id: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(ok(cli(stack, key, "batch", "status", batch_id)))
    return found


def follow(stack: Stack, key: str, batch_id: str, wanted: set[str], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = status(stack, key, batch_id)
        if batch["status"] in wanted:
            return batch
        time.sleep(0.2)
    raise AssertionError(f"batch {batch_id} never reached {wanted}")


@pytest.fixture(scope="module")
def finished(
    stack: Stack, key: str, tmp_path_factory: pytest.TempPathFactory
) -> tuple[subprocess.CompletedProcess[str], str]:
    """``submit --wait`` of a 20-line file: the finished process and the batch id."""
    path = write_jsonl(tmp_path_factory.mktemp("cli-input") / "requests.jsonl", 20)
    done = cli(stack, key, "batch", "submit", str(path), "--wait", "--metadata", "job=cli")
    found = BATCH_ID.search(done.stdout)
    assert found, done.stderr + done.stdout
    return done, found.group()


def test_submit_wait_shows_progress_and_a_summary(
    finished: tuple[subprocess.CompletedProcess[str], str],
) -> None:
    done, batch_id = finished
    assert done.returncode == 0, done.stderr + done.stdout
    assert f"batch {batch_id} created from requests.jsonl" in done.stderr
    assert "20/20" in done.stderr and "req/s" in done.stderr and "0 failed" in done.stderr
    assert f"batch {batch_id} completed" in done.stdout
    assert "20 total, 20 completed, 0 failed" in done.stdout
    assert f"igw batch download {batch_id}" in done.stdout


def test_download_status_and_list(
    stack: Stack, key: str, finished: tuple[subprocess.CompletedProcess[str], str], tmp_path: Path
) -> None:
    _, batch_id = finished
    output = ok(cli(stack, key, "batch", "download", batch_id))
    lines = [json.loads(line) for line in output.splitlines()]
    assert sorted(line["custom_id"] for line in lines) == sorted(f"req-{n}" for n in range(20))
    assert all(line["response"]["status_code"] == 200 for line in lines)

    target = tmp_path / "out.jsonl"
    ok(cli(stack, key, "batch", "download", batch_id, "-o", str(target)))
    assert len(target.read_text().splitlines()) == 20
    no_errors = cli(stack, key, "batch", "download", batch_id, "--errors")
    assert no_errors.returncode == 1 and "no error file" in no_errors.stderr

    batch = status(stack, key, batch_id)
    assert batch["status"] == "completed" and batch["metadata"] == {"job": "cli"}
    assert batch["request_counts"] == {"total": 20, "completed": 20, "failed": 0}

    table = ok(cli(stack, key, "batch", "list"))
    (row,) = [line for line in table.splitlines() if batch_id in line]
    assert "completed" in row and re.search(r"\b20\b.*\b0\b.*\b20\b", row)


def test_a_bad_line_is_refused_naming_it(stack: Stack, key: str, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", 3)
    good = path.read_text().splitlines()
    path.write_text("\n".join([good[0], '{"custom_id": "b", oops', good[2]]) + "\n")
    done = cli(stack, key, "batch", "submit", str(path), "--wait")
    assert done.returncode == 1
    assert "bad.jsonl was refused" in done.stderr and "line 2:" in done.stderr
    assert "not valid JSON" in done.stderr and not BATCH_ID.search(done.stdout + done.stderr)


def test_ctrl_c_stops_waiting_not_the_batch(stack: Stack, key: str, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "slow.jsonl", 30, model="sim-3s", prefix="slow")
    waiting = subprocess.Popen(
        command(stack, key, "batch", "submit", str(path), "--wait"),
        env=stack.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=stack.root,
    )
    assert waiting.stderr is not None
    try:
        created = waiting.stderr.readline()  # "batch <id> created from ...", then the bar
        found = BATCH_ID.search(created)
        assert found, created
        time.sleep(1.0)
        waiting.send_signal(signal.SIGINT)
        out, err = waiting.communicate(timeout=30)
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.communicate()
    assert waiting.returncode == 130, created + err + out
    assert "keeps running" in err and f"igw batch status {found.group()}" in err
    assert status(stack, key, found.group())["status"] in ("validating", "in_progress")
    ok(cli(stack, key, "batch", "cancel", found.group()))


def test_cancel_stops_a_slow_batch(stack: Stack, key: str, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "slow.jsonl", 30, model="sim-3s", prefix="slow")
    batch_id = json.loads(ok(cli(stack, key, "batch", "submit", str(path))))["id"]
    follow(stack, key, batch_id, {"in_progress"})
    no_output = cli(stack, key, "batch", "download", batch_id)
    assert no_output.returncode == 1 and "files are written when it ends" in no_output.stderr

    cancelling = json.loads(ok(cli(stack, key, "batch", "cancel", batch_id)))
    assert cancelling["status"] in ("cancelling", "cancelled")
    done = follow(stack, key, batch_id, {"cancelled"})
    counts = done["request_counts"]
    assert counts["total"] == 30 and counts["completed"] + counts["failed"] < 30
