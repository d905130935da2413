"""The batch service (``igw batcher``): wiring only (the logic is in ``runner``).

Three durable push consumers on IGW_BATCH, shared by replicas through their
deliver groups: submissions (``igw.batch.submit``), the workers' replies to
batch items (``igw.batch.reply.>``) and cancels (``igw.batch.cancel.*``).
A message is acked only after it was handled; a failure naks it for a later
try. Every few seconds every unfinished batch is advanced, which resumes
batches after a restart and ends those whose completion window passed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

from nats.aio.msg import Msg

from schemas import subjects as s
from services.batch.people import People
from services.batch.runner import BatchRunner
from services.runtime.admission import Admission
from services.runtime.bus import connect, wait_for_streams
from services.runtime.consumers import PushConsumer, consume
from services.runtime.file_store import FileStore
from services.runtime.metrics_http import serving
from services.runtime.settings import Settings

log = logging.getLogger("igw.batch")

SWEEP_S: Final = 2.0
RETRY_DELAY_S: Final = 1.0


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    nc = await connect(settings, "batcher")
    js = nc.jetstream()
    await wait_for_streams(
        js,
        [
            s.STREAM_BATCH,
            s.STREAM_REQUESTS,
            s.KV_BATCHES_STREAM,
            s.KV_KEYS_STREAM,
            s.KV_SPEND_STREAM,
            s.KV_LIMITS_STREAM,
            s.OBJ_FILES_STREAM,
        ],
        wait_s=30.0,
    )
    people = People()
    runner = BatchRunner(
        settings,
        nc,
        js,
        batches=await js.key_value(s.KV_BATCHES),
        keys=await js.key_value(s.KV_KEYS),
        files=FileStore(await js.object_store(s.OBJ_FILES)),
        admission=Admission(
            settings,
            people,
            spend=await js.key_value(s.KV_SPEND),
            limits=await js.key_value(s.KV_LIMITS),
        ),
        people=people,
    )
    tasks: set[asyncio.Task[None]] = set()

    def handler(work: Callable[[Msg], Awaitable[None]]) -> Callable[[Msg], Awaitable[None]]:
        async def handle(msg: Msg) -> None:
            try:
                await work(msg)
            except Exception:
                log.exception("batch message on %s failed; it will be retried", msg.subject)
                with contextlib.suppress(Exception):
                    await msg.nak(delay=RETRY_DELAY_S)
                return
            await msg.ack()

        async def spawn(msg: Msg) -> None:
            task = asyncio.create_task(handle(msg))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        return spawn

    async def on_cancel(msg: Msg) -> None:
        await runner.stop(msg.subject.rsplit(".", 1)[1], "cancelled")

    def consumer(name: str, subject: str, pending: int) -> PushConsumer:
        return PushConsumer(
            s.STREAM_BATCH, name, subject, settings.bus.work_ack_wait_s, -1, pending
        )

    specs: list[tuple[PushConsumer, Callable[[Msg], Awaitable[Any]]]] = [
        (consumer(s.CONSUMER_BATCH_SUBMIT, s.BATCH_SUBMIT, 64), lambda m: runner.submit(m.data)),
        (consumer(s.CONSUMER_BATCH_REPLIES, s.BATCH_REPLIES, 4096), runner.on_reply),
        (consumer(s.CONSUMER_BATCH_CANCELS, s.BATCH_CANCELS, 64), on_cancel),
    ]
    subs = [await consume(js, spec, handler(work)) for spec, work in specs]
    log.info("batcher ready: consuming %s", ", ".join(spec.filter_subject for spec, _ in specs))
    try:
        async with serving("batcher", runner.metrics.registry, settings.metrics):
            while not stop.is_set():
                try:
                    await runner.resume()
                except Exception:
                    log.exception("sweeping batches failed")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), SWEEP_S)
    finally:
        for sub in subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        if tasks:
            await asyncio.wait(tasks, timeout=10.0)
        await nc.drain()
