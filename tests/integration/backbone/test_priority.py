"""Requests waiting for capacity drain interactive first: batch work steps back."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import nats
import pytest

from schemas import subjects as s
from schemas.bus import InferenceRequest, ReplyMeta
from tests.stack import Stack

pytestmark = pytest.mark.integration

BODY = {"model": "sim-prio", "messages": [{"role": "user", "content": "hi"}]}


async def _drain_in_order(stack: Stack) -> list[str]:
    finished: list[str] = []
    nc = await nats.connect(stack.nats_url)
    js = nc.jetstream()
    done = asyncio.Event()
    batch_ids = [f"req_batch{i}_{uuid.uuid4().hex[:8]}" for i in range(3)]

    async def on_reply(msg: nats.aio.msg.Msg) -> None:
        meta = ReplyMeta.model_validate_json((msg.headers or {})[s.HEADER_REPLY])
        if meta.kind == "terminal":
            assert meta.error is None, meta.error
            finished.append("batch")
            if finished.count("batch") == len(batch_ids):
                done.set()

    await nc.subscribe("igw.chunks.prio-test.*", cb=on_reply)
    now = time.time()
    for rid in batch_ids:  # batch work arrives first ...
        request = InferenceRequest(
            request_id=rid,
            created_at=now,
            deadline=now + 60,
            priority="batch",
            model="sim-prio",
            reply_subject=f"igw.chunks.prio-test.{rid}",
            body=BODY,
        )
        await js.publish(
            s.request_subject("batch"),
            request.model_dump_json().encode(),
            headers={s.HEADER_MSG_ID: rid},
        )

    async def interactive() -> None:
        async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
            reply = await client.post("/v1/chat/completions", json=BODY)
            assert reply.status_code == 200, reply.text
            finished.append("interactive")

    await asyncio.sleep(0)  # ... and interactive requests right after it
    await asyncio.gather(interactive(), interactive())
    await asyncio.wait_for(done.wait(), 30)
    await nc.close()
    return finished


def test_interactive_requests_go_before_waiting_batch_work(stack: Stack) -> None:
    order = asyncio.run(_drain_in_order(stack))
    # one batch request may take the free slot before the interactive ones arrive;
    # after that both interactive requests are served before the remaining batch work
    assert order.index("interactive") <= 1
    assert order[-2:] == ["batch", "batch"] and order.count("interactive") == 2
