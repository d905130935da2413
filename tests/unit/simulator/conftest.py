"""A real simulator on a free loopback port, shared by the tests of a module."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import openai
import pytest_asyncio

from services.simulator.app import SimulatorApp, create_app
from services.simulator.server import bind_socket, serve


@dataclass(frozen=True)
class Sim:
    app: SimulatorApp
    url: str


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def sim() -> AsyncIterator[Sim]:
    app = create_app()
    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    ready = asyncio.Event()
    server = asyncio.create_task(serve(ready=ready, app=app, sock=sock))
    ready_wait = asyncio.create_task(ready.wait())
    await asyncio.wait((server, ready_wait), return_when=asyncio.FIRST_COMPLETED)
    if server.done():
        ready_wait.cancel()
        server.result()  # raise whatever made the server stop
        raise RuntimeError("simulator exited before listening")
    yield Sim(app, f"http://127.0.0.1:{port}")
    server.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await server


@pytest_asyncio.fixture(loop_scope="session")
async def client(sim: Sim) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=f"{sim.url}/v1",
        api_key="x",
        _strict_response_validation=True,
        max_retries=0,
    ) as oai:
        yield oai


@pytest_asyncio.fixture(loop_scope="session")
async def http(sim: Sim) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sim.url, timeout=10) as raw:
        yield raw
