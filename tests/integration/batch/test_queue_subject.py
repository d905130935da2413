"""Batches over NATS alone: a plain nats-py client publishes a job on
``igw.batch.submit`` and follows it on ``igw.batch.status.<id>`` and
``igw.batch.results.<id>``; the items run through the router and workers at
batch priority and land in ClickHouse with the batch id."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import nats
import openai
import pytest

from tests.stack import SERVICES, Stack
from tests.waiting import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root: Path = tmp_path_factory.mktemp("igw-batch-queue")
    deployment = Stack(root, services=(*SERVICES, "batcher"))
    deployment.overrides = {"batch": {"max_in_flight": 4}}
    try:
        deployment.start_all()
        yield deployment
    finally:
        deployment.stop_all()


def item(custom_id: str, model: str = "sim") -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": model, "messages": [{"role": "user", "content": custom_id}]},
    }


async def run_batch(
    stack: Stack,
    items: list[dict[str, Any]],
    until: set[str],
    cancel_after: int | None = None,
    window: str = "24h",
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Submit a batch over NATS and follow it to one of the ``until`` statuses."""
    batch_id = f"batch_{uuid.uuid4().hex[:16]}"
    nc = await nats.connect(stack.nats_url)
    statuses: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    ended = asyncio.Event()

    async def on_status(msg: Any) -> None:
        statuses.append(json.loads(msg.data))
        if statuses[-1]["status"] in until:
            ended.set()

    async def on_result(msg: Any) -> None:
        results.append(json.loads(msg.data))
        if cancel_after is not None and len(results) == cancel_after:
            await nc.publish(f"igw.batch.cancel.{batch_id}", b"")

    await nc.subscribe(f"igw.batch.status.{batch_id}", cb=on_status)
    await nc.subscribe(f"igw.batch.results.{batch_id}", cb=on_result)
    submission = {"batch_id": batch_id, "completion_window": window, "items": items,
                  "metadata": {"job": "nightly"}}  # fmt: skip
    ack = await nc.jetstream().publish(
        "igw.batch.submit", json.dumps(submission).encode(), headers={"Nats-Msg-Id": batch_id}
    )
    assert not ack.duplicate
    await asyncio.wait_for(ended.wait(), 60)
    await nc.close()
    return statuses, results


def test_a_batch_runs_over_nats_alone(stack: Stack) -> None:
    items = [item(f"q-{n}") for n in range(12)] + [item("broken-1", "sim-500")]
    statuses, results = asyncio.run(run_batch(stack, items, {"completed", "failed"}))
    final = statuses[-1]
    assert [s["status"] for s in statuses] == ["in_progress", "completed"]
    assert final["request_counts"] == {"total": 13, "completed": 12, "failed": 1}
    assert final["metadata"] == {"job": "nightly"}
    assert final["output_file_id"] and final["error_file_id"]
    by_id = {r["custom_id"]: r for r in results}
    assert len(results) == len(by_id) == 13
    answer = by_id["q-3"]["response"]
    assert answer["status_code"] == 200 and answer["body"]["object"] == "chat.completion"
    assert by_id["broken-1"]["response"]["status_code"] == 502

    output = httpx.get(f"{stack.base_url}/v1/files/{final['output_file_id']}/content", timeout=10)
    lines = [json.loads(line) for line in output.text.splitlines()]
    assert sorted(line["custom_id"] for line in lines) == sorted(f"q-{n}" for n in range(12))
    errors = httpx.get(f"{stack.base_url}/v1/files/{final['error_file_id']}/content", timeout=10)
    assert [json.loads(line)["custom_id"] for line in errors.text.splitlines()] == ["broken-1"]

    def landed() -> bool:
        try:
            rows = stack.sql(
                "SELECT countIf(final), uniqExact(priority) FROM requests "
                f"WHERE batch_id = '{final['id']}' AND priority = 'batch'"
            )
        except AssertionError:
            return False
        return rows == [[13, 1]]

    wait_until(landed, 30, "the batch's usage rows, with its id, at batch priority")


def test_a_bad_item_fails_the_batch_before_anything_runs(stack: Stack) -> None:
    before = stack.sim_stats()["requests"]
    items = [item("ok-1"), item("who-2", "no-such-model")]
    statuses, results = asyncio.run(run_batch(stack, items, {"failed", "completed"}))
    final = statuses[-1]
    assert final["status"] == "failed" and results == []
    (error,) = final["errors"]["data"]
    assert error["line"] == 2 and error["code"] == "model_not_found"
    assert stack.sim_stats()["requests"] == before


def test_a_cancel_stops_the_rest_and_keeps_what_finished(stack: Stack) -> None:
    items = [item(f"slow-{n}", "sim-3s") for n in range(20)]
    statuses, _ = asyncio.run(run_batch(stack, items, {"cancelled"}, cancel_after=1))
    final = statuses[-1]
    assert [s["status"] for s in statuses][-2:] == ["cancelling", "cancelled"]
    counts = final["request_counts"]
    assert counts["total"] == 20 and counts["completed"] + counts["failed"] < 20
    assert counts["completed"] >= 1 and final["cancelled_at"] is not None


def test_interactive_requests_do_not_wait_behind_a_large_batch(stack: Stack) -> None:
    """A 1,000-item batch keeps only ``max_in_flight`` items in the system at a time, at
    batch priority, so an interactive request never queues behind the rest of it."""
    items = [item(f"bulk-{n}") for n in range(1000)]
    client = openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key="x", max_retries=0)

    async def scenario() -> tuple[list[float], dict[str, Any]]:
        task = asyncio.create_task(run_batch(stack, items, {"completed", "failed"}))
        await asyncio.sleep(0.5)  # let the batch get going; then measure next to it
        latencies: list[float] = []
        for n in range(20):
            started = time.perf_counter()
            await asyncio.to_thread(
                client.chat.completions.create,
                model="sim",
                messages=[{"role": "user", "content": f"interactive {n}"}],
            )
            latencies.append(time.perf_counter() - started)
        during = await asyncio.to_thread(
            lambda: httpx.get(f"{stack.base_url}/v1/batches", timeout=10).json()
        )
        statuses, _ = await task
        return latencies, {"during": during, "final": statuses[-1]}

    latencies, seen = asyncio.run(scenario())
    final = seen["final"]
    assert final["status"] == "completed"
    assert final["request_counts"]["completed"] == 1000
    running = [b for b in seen["during"]["data"] if b["id"] == final["id"]]
    assert running and running[0]["status"] == "in_progress"  # measured while it ran
    assert max(latencies) < 2.0, latencies  # never behind hundreds of batch items


def test_a_batch_past_its_window_ends_expired_with_what_finished(stack: Stack) -> None:
    items = [item(f"late-{n}", "sim-3s") for n in range(12)]
    until = {"expired", "completed", "failed"}
    statuses, results = asyncio.run(run_batch(stack, items, until, window="4s"))
    final = statuses[-1]
    assert final["status"] == "expired" and final["expired_at"] is not None
    counts = final["request_counts"]
    assert counts["total"] == 12 and 1 <= counts["completed"] < 12
    assert len(results) >= counts["completed"]
    assert final["output_file_id"]  # what finished in time is kept
