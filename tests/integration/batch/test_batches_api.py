"""The OpenAI Batch API end to end with the official SDK: upload a JSONL file,
create a batch, follow it to ``completed``, download the output and error
files; batches are private to their key, and a cancel stops one."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.stack import SERVICES, Stack

pytestmark = pytest.mark.integration

MASTER = "sk-master-batches-0123456789"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root: Path = tmp_path_factory.mktemp("igw-batches-api")
    deployment = Stack(root, services=(*SERVICES, "batcher"))
    deployment.overrides = {"auth": {"master_key": MASTER}, "batch": {"max_in_flight": 4}}
    try:
        deployment.start_all()
        yield deployment
    finally:
        deployment.stop_all()


def new_key(stack: Stack, **fields: Any) -> str:
    return stack.new_key(MASTER, **fields)


def sdk(stack: Stack, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key=key, max_retries=0)


def jsonl(*models: str) -> io.BytesIO:
    lines = [
        {
            "custom_id": f"req-{n}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": f"item {n}"}]},
        }
        for n, model in enumerate(models)
    ]
    data = io.BytesIO("\n".join(json.dumps(line) for line in lines).encode())
    data.name = "input.jsonl"
    return data


def follow(client: openai.OpenAI, batch_id: str, statuses: set[str], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = client.batches.retrieve(batch_id)
        if batch.status in statuses:
            return batch
        time.sleep(0.1)  # polling the public API is what an SDK user does
    raise AssertionError(f"batch {batch_id} never reached {statuses}")


def test_upload_create_follow_and_download(stack: Stack) -> None:
    client = sdk(stack, new_key(stack))
    upload = client.files.create(file=jsonl(*["sim"] * 10, "sim-500"), purpose="batch")
    batch = client.batches.create(
        input_file_id=upload.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"team": "research"},
    )
    assert batch.id.startswith("batch_") and batch.status in ("validating", "in_progress")
    done = follow(client, batch.id, {"completed", "failed"})
    assert done.status == "completed", done
    assert done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed) == (11, 10)
    assert done.request_counts.failed == 1 and done.metadata == {"team": "research"}
    assert done.output_file_id and done.error_file_id

    output = [json.loads(x) for x in client.files.content(done.output_file_id).text.splitlines()]
    assert sorted(line["custom_id"] for line in output) == sorted(f"req-{n}" for n in range(10))
    first = output[0]["response"]
    assert first["status_code"] == 200 and first["body"]["choices"][0]["message"]["content"]
    errors = [json.loads(x) for x in client.files.content(done.error_file_id).text.splitlines()]
    assert [e["custom_id"] for e in errors] == ["req-10"]
    assert errors[0]["response"]["status_code"] == 502

    assert batch.id in [b.id for b in client.batches.list()]


def test_batches_are_private_to_their_key(stack: Stack) -> None:
    owner, stranger = sdk(stack, new_key(stack)), sdk(stack, new_key(stack))
    upload = owner.files.create(file=jsonl("sim"), purpose="batch")
    with pytest.raises(openai.NotFoundError):
        stranger.batches.create(
            input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
    batch = owner.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    with pytest.raises(openai.NotFoundError):
        stranger.batches.retrieve(batch.id)
    assert batch.id not in [b.id for b in stranger.batches.list()]
    with pytest.raises(openai.BadRequestError):
        owner.batches.create(
            input_file_id=upload.id,
            endpoint="/v1/chat/completions",
            completion_window="1h",  # type: ignore[arg-type]
        )


def test_a_cancelled_batch_stops(stack: Stack) -> None:
    client = sdk(stack, new_key(stack))
    upload = client.files.create(file=jsonl(*["sim-3s"] * 30), purpose="batch")
    batch = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    follow(client, batch.id, {"in_progress"})
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status in ("cancelling", "cancelled")
    done = follow(client, batch.id, {"cancelled"})
    assert done.request_counts is not None and done.request_counts.total == 30
    assert done.request_counts.completed + done.request_counts.failed < 30


def test_items_respect_the_keys_budget(stack: Stack) -> None:
    client = sdk(stack, new_key(stack, max_budget=0.000000001))
    before = stack.sim_stats()["requests"]
    upload = client.files.create(file=jsonl(*["sim"] * 5), purpose="batch")
    batch = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    done = follow(client, batch.id, {"completed", "failed"})
    assert done.request_counts is not None
    assert (done.request_counts.completed, done.request_counts.failed) == (0, 5)
    assert done.error_file_id and not done.output_file_id
    errors = [json.loads(x) for x in client.files.content(done.error_file_id).text.splitlines()]
    assert {e["response"]["status_code"] for e in errors} == {402}
    assert {e["response"]["body"]["error"]["code"] for e in errors} == {"budget_exceeded"}
    assert stack.sim_stats()["requests"] == before  # nothing went upstream


def test_the_master_key_runs_a_batch_too(stack: Stack) -> None:
    client = sdk(stack, MASTER)
    upload = client.files.create(file=jsonl("sim", "sim"), purpose="batch")
    batch = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    done = follow(client, batch.id, {"completed", "failed"})
    assert done.status == "completed" and done.request_counts is not None
    assert done.request_counts.completed == 2
