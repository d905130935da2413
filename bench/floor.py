"""The floor of IGW's shape on this machine: the same path with nothing else.

A raw ASGI front publishes to JetStream, a bare router re-publishes to a work
stream, a bare worker calls the simulator with aiohttp and replies on core
NATS: no validation, no routing table, no usage events, no accounting. What
this adds over going direct to the simulator is what the bus hops and process
switches alone cost here; compare it with ``bench.py``'s figures.

    python bench/floor.py [--requests 2000] [--concurrency 32] [--duration 10]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import nats
import orjson
import uvicorn
import uvloop
from nats.js.api import RetentionPolicy, StorageType, StreamConfig

from bench import Client, console, free_port, load, paired, pct
from services.runtime import natsserver


async def setup(url: str) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    for name, subject in (("FLOOR_REQ", "floor.req.>"), ("FLOOR_WORK", "floor.work.>")):
        await js.add_stream(
            StreamConfig(
                name=name,
                subjects=[subject],
                retention=RetentionPolicy.WORK_QUEUE,
                storage=StorageType.FILE,
                duplicate_window=120,
            )
        )
    await nc.close()


async def router(url: str) -> None:
    tasks: set[asyncio.Future[None]] = set()
    nc = await nats.connect(url)
    js = nc.jetstream()

    async def on(msg: Any) -> None:
        async def go() -> None:
            headers = {"Nats-Msg-Id": msg.headers["Nats-Msg-Id"]}
            await js.publish("floor.work.x", msg.data, headers=headers)
            await msg.ack()

        task = asyncio.ensure_future(go())
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    await js.subscribe(
        "floor.req.>", queue="fr", durable="fr", cb=on, manual_ack=True, stream="FLOOR_REQ"
    )
    await asyncio.Event().wait()


async def worker(url: str, upstream: str) -> None:
    tasks: set[asyncio.Future[None]] = set()
    nc = await nats.connect(url)
    js = nc.jetstream()
    session = aiohttp.ClientSession()

    async def on(msg: Any) -> None:
        async def go() -> None:
            request = orjson.loads(msg.data)
            async with session.post(
                upstream, data=orjson.dumps(request["body"]),
                headers={"content-type": "application/json"},
            ) as resp:  # fmt: skip
                body = await resp.read()
            await nc.publish(request["reply"], body)
            await msg.ack()

        task = asyncio.ensure_future(go())
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    await js.subscribe(
        "floor.work.>", queue="fw", durable="fw", cb=on, manual_ack=True, stream="FLOOR_WORK"
    )
    await asyncio.Event().wait()


def front(url: str, port: int) -> None:
    state: dict[str, Any] = {"waiting": {}}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                nc = await nats.connect(url)
                state["js"] = nc.jetstream()

                async def on(msg: Any) -> None:
                    future = state["waiting"].pop(msg.subject.rpartition(".")[2], None)
                    if future is not None:
                        future.set_result(msg.data)

                await nc.subscribe("floor.reply.*", cb=on)
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        rid = uuid.uuid4().hex
        future = asyncio.get_running_loop().create_future()
        state["waiting"][rid] = future
        request = {"body": orjson.loads(body), "reply": f"floor.reply.{rid}"}
        await state["js"].publish(
            "floor.req.i", orjson.dumps(request), headers={"Nats-Msg-Id": rid}
        )
        out = await future
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": out})

    uvicorn.run(app, port=port, loop="uvloop", http="httptools", log_level="warning")


async def measure(front_url: str, sim_url: str, args: argparse.Namespace) -> dict[str, float]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:
        client = Client(session)

        await paired(client.complete, sim_url, front_url, 300)
        direct, through = await paired(client.complete, sim_url, front_url, args.requests)
        done, errors, _ = await load(client, front_url, args.concurrency, args.duration)
    return {
        "added_p50_ms": pct(through, 0.5) - pct(direct, 0.5),
        "added_p99_ms": pct(through, 0.99) - pct(direct, 0.99),
        "rps": done / args.duration,
        "errors": errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--role", choices=["router", "worker", "front"], help=argparse.SUPPRESS)
    parser.add_argument("--nats", help=argparse.SUPPRESS)
    parser.add_argument("--sim", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "router":
        uvloop.run(router(args.nats))
    elif args.role == "worker":
        uvloop.run(worker(args.nats, f"{args.sim}/v1/chat/completions"))
    elif args.role == "front":
        front(args.nats, args.port)
    else:
        run_all(args)


def run_all(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="igw-floor-") as tmp:
        spec = natsserver.NatsServerSpec("127.0.0.1", free_port(), Path(tmp) / "nats")
        procs = [natsserver.start(spec)]
        sim_port, front_port = free_port(), free_port()
        sim = f"http://127.0.0.1:{sim_port}"
        me = [sys.executable, __file__, "--nats", spec.url, "--sim", sim]
        try:
            uvloop.run(setup(spec.url))
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "services.simulator", "--port", str(sim_port)]
            ))  # fmt: skip
            procs += [subprocess.Popen([*me, "--role", role]) for role in ("router", "worker")]
            procs.append(subprocess.Popen([*me, "--role", "front", "--port", str(front_port)]))
            front_url = f"http://127.0.0.1:{front_port}"
            for url in (f"{sim}/v1/models", front_url):
                wait_http(url)
            console.print("measuring the floor ...")
            result = uvloop.run(measure(front_url, sim, args))
        finally:
            for proc in reversed(procs):
                proc.terminate()
                proc.wait(timeout=10)
    console.print(
        f"floor: added p50 {result['added_p50_ms']:.2f} ms, p99 {result['added_p99_ms']:.2f} ms "
        f"at 1 in flight; {result['rps']:.0f} requests/s at {args.concurrency} in flight, "
        f"{result['errors']:.0f} errors"
    )


def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:
            return  # answering at all is enough
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not answer within {timeout:.0f}s")


if __name__ == "__main__":
    main()
