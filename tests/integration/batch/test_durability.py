"""A batch survives its services: while it runs, the batch service, a worker,
the router, accounting and the ingress are SIGKILLed and restarted, and the
NATS server itself restarts on its file store. The batch still completes, and
every item is in the output exactly once and in ClickHouse exactly once."""

from __future__ import annotations

import asyncio
import json
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest

from tests.stack import SERVICES, Stack, sim_model
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

ITEMS = 80


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root: Path = tmp_path_factory.mktemp("igw-batch-crash")
    deployment = Stack(root, services=(*SERVICES, "batcher"))
    deployment.extra_models = [sim_model("sim-steady", "sim?ttft_ms=120", deployment.sim_port)]
    deployment.overrides = {"batch": {"max_in_flight": 4}}
    try:
        deployment.start_all()
        yield deployment
    finally:
        deployment.stop_all()


def status(stack: Stack, batch_id: str) -> dict[str, Any] | None:
    try:
        reply = httpx.get(f"{stack.base_url}/v1/batches/{batch_id}", timeout=5)
    except httpx.HTTPError:
        return None  # the ingress is restarting
    return reply.json() if reply.status_code == 200 else None


async def submit(stack: Stack, batch_id: str) -> None:
    nc = await nats.connect(stack.nats_url)
    items = [
        {
            "custom_id": f"c-{n}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "sim-steady", "messages": [{"role": "user", "content": str(n)}]},
        }
        for n in range(ITEMS)
    ]
    body = json.dumps({"batch_id": batch_id, "items": items}).encode()
    await nc.jetstream().publish("igw.batch.submit", body, headers={"Nats-Msg-Id": batch_id})
    await nc.close()


def answered(stack: Stack, batch_id: str) -> int:
    batch = status(stack, batch_id)
    if batch is None:
        return -1
    counts = batch["request_counts"]
    return int(counts["completed"] + counts["failed"])


def test_a_batch_completes_through_crashes_of_every_service(stack: Stack) -> None:
    batch_id = f"batch_{uuid.uuid4().hex[:12]}"
    asyncio.run(submit(stack, batch_id))
    for n, name in enumerate(("batcher", "worker-openai", "router", "accounting", "ingress")):
        wait_until(lambda n=n: answered(stack, batch_id) >= 8 * (n + 1), 60, f"{8 * (n + 1)} items")
        stack.kill(name, signal.SIGKILL)
        stack.start(name)
    stack.kill("nats", signal.SIGTERM)
    stack.start_nats()
    wait_until(lambda: (status(stack, batch_id) or {}).get("status") == "completed", 120, "the end")

    batch = status(stack, batch_id)
    assert batch is not None
    assert batch["request_counts"] == {"total": ITEMS, "completed": ITEMS, "failed": 0}
    output = httpx.get(f"{stack.base_url}/v1/files/{batch['output_file_id']}/content", timeout=10)
    ids = [json.loads(line)["custom_id"] for line in output.text.splitlines()]
    assert sorted(ids) == sorted(f"c-{n}" for n in range(ITEMS))

    def stored() -> bool:
        try:
            rows = stack.sql(
                "SELECT countIf(final), uniqExact(request_id) FROM requests "
                f"WHERE batch_id = '{batch_id}'"
            )
        except AssertionError:
            return False
        return rows == [[ITEMS, ITEMS]]

    wait_until(stored, 60, "one usage row per item")
    ((attempts,),) = stack.sql(f"SELECT count() FROM requests WHERE batch_id = '{batch_id}'")
    assert int(attempts) == ITEMS  # no item was sent upstream twice
