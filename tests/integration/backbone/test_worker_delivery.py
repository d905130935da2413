"""Work messages are never lost to a worker crash, and a finished attempt is
never sent upstream twice."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import nats
import openai
import pytest

from schemas import subjects as s
from schemas.bus import InferenceRequest, RouteDecision, WorkItem
from tests.stack import Stack
from tests.waiting import wait_until

pytestmark = pytest.mark.integration


def test_worker_killed_mid_request_is_redelivered_and_answered_once(stack: Stack) -> None:
    client = openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key="x", max_retries=0)
    before = stack.sim_stats()
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(
            client.chat.completions.with_raw_response.create,
            model="sim-3s",
            messages=[{"role": "user", "content": "survive a crash"}],
        )
        wait_until(lambda: stack.sim_stats()["active"] > before["active"], 10, "the upstream call")
        stack.kill("worker-openai")  # mid-request: no usage event, no ack
        stack.start("worker-openai")
        raw = pending.result(timeout=60)
    assert raw.parse().choices[0].message.content
    request_id = raw.headers["x-request-id"]
    # the killed worker's call was cut, the new worker ran the attempt again
    assert stack.sim_stats()["requests"] >= before["requests"] + 2
    deadline = time.monotonic() + 30
    rows: list[list[object]] = []
    while time.monotonic() < deadline:
        rows = stack.sql(f"SELECT status FROM requests WHERE request_id = '{request_id}'")
        if rows:
            break
        time.sleep(0.2)
    assert rows == [["ok"]]


async def test_a_finished_attempt_is_acked_without_calling_upstream(stack: Stack) -> None:
    nc = await nats.connect(stack.nats_url)
    js = nc.jetstream()
    try:
        now = time.time()
        request = InferenceRequest(
            request_id=f"req_redelivered{int(now * 1000)}",
            created_at=now,
            deadline=now + 60,
            model="sim",
            reply_subject="igw.chunks.test.none",
            body={"model": "sim", "messages": [{"role": "user", "content": "hi"}]},
        )
        route = RouteDecision(
            provider="openai",
            deployment="sim",
            upstream_model="sim",
            subject=s.work_subject("openai", "sim"),
        )
        kv = await js.key_value(s.KV_ATTEMPTS)
        await kv.put(s.attempt_key(request.request_id, 1), b"done")
        before = stack.sim_stats()["requests"]

        # Take the first delivery away from the workers by joining their
        # deliver group and never acking; JetStream redelivers after the ack
        # wait, and the worker that gets delivery 2 must see the mark.
        stack.kill("worker-openai")
        first_delivery: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        async def hold(msg: nats.aio.msg.Msg) -> None:
            if not first_delivery.done():
                first_delivery.set_result(msg.metadata.num_delivered)

        thief = await nc.subscribe("igw.deliver.worker-openai", queue="worker-openai", cb=hold)
        item = WorkItem(request=request, route=route)
        await js.publish(
            route.subject,
            item.model_dump_json().encode(),
            headers={s.HEADER_MSG_ID: s.attempt_msg_id(request.request_id, 1)},
        )
        assert await asyncio.wait_for(first_delivery, 10) == 1
        await thief.unsubscribe()
        stack.start("worker-openai")

        async def outstanding() -> int:
            info = await js.consumer_info(s.STREAM_WORK, s.worker_consumer("openai"))
            return int(info.num_pending + info.num_ack_pending)

        for _ in range(300):  # the consumer's state can only be polled
            if not await outstanding():
                break
            await asyncio.sleep(0.1)
        assert await outstanding() == 0
        assert stack.sim_stats()["requests"] == before
    finally:
        await nc.close()


def test_a_stopping_worker_finishes_the_attempt_it_holds(stack: Stack) -> None:
    import signal

    client = openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key="x", max_retries=0)
    before = stack.sim_stats()
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(
            client.chat.completions.create,
            model="sim-3s",
            messages=[{"role": "user", "content": "finish before you go"}],
        )
        wait_until(lambda: stack.sim_stats()["active"] > before["active"], 10, "the upstream call")
        stack.kill("worker-openai", signal.SIGTERM)  # returns once the process has exited
        completion = pending.result(timeout=30)
    stack.start("worker-openai")
    assert completion.choices[0].message.content
    # answered by the stopping worker itself: one upstream call, none repeated
    assert stack.sim_stats()["requests"] == before["requests"] + 1
