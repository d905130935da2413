"""The ingress's drain: open streams end with an error, new requests get a 503."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response

from schemas.bus import ReplyMeta
from schemas.subjects import HEADER_REPLY
from services.ingress.fastpath import FastPath
from services.ingress.replies import ReplyMux
from services.ingress.shutdown import SHUTTING_DOWN, uvicorn_grace_s
from services.runtime.errors import ServiceUnavailable
from services.runtime.settings import ServerSettings


@dataclass
class FakeMsg:
    data: bytes
    headers: dict[str, str]


def reply(seq: int) -> FakeMsg:
    meta = ReplyMeta(kind="chunk", request_id="r", attempt=1, seq=seq, provider="p", deployment="d")
    return FakeMsg(b"{}", {HEADER_REPLY: meta.model_dump_json()})


async def test_abort_all_ends_waiting_and_later_streams_with_the_error() -> None:
    mux = ReplyMux(nc=None, ingress_id="i", buffer_limit=8)  # type: ignore[arg-type]
    waiting = mux.open("a", time.time() + 30)
    queued = mux.open("b", time.time() + 30)
    queued.put(reply(0))  # type: ignore[arg-type]
    reader = asyncio.create_task(waiting.next())
    await asyncio.sleep(0)
    mux.abort_all(SHUTTING_DOWN)
    with pytest.raises(ServiceUnavailable) as info:
        await reader
    assert info.value.code == "shutting_down" and info.value.status == 503
    with pytest.raises(ServiceUnavailable):
        await queued.next()  # what was queued is dropped: the stream is over
    assert queued.next_ready() is None
    with pytest.raises(ServiceUnavailable):
        await mux.open("c", time.time() + 30).next()


async def test_a_draining_replica_refuses_requests_but_still_answers_probes() -> None:
    app = FastAPI()

    async def chat(request: Request) -> Response:
        return Response(b"{}")

    for path in ("/health", "/ready", "/v1/models"):
        app.router.add_route(path, chat, methods=["GET"])
    front = FastPath(app, {("POST", "/v1/chat/completions"): chat})
    front.draining = True
    transport = httpx.ASGITransport(app=front)
    async with httpx.AsyncClient(transport=transport, base_url="http://igw") as client:
        refused = await client.post("/v1/chat/completions", json={})
        other = await client.get("/v1/models")
        probes = [await client.get(p) for p in ("/health", "/ready")]
    for answer in (refused, other):
        assert answer.status_code == 503
        assert answer.headers["connection"] == "close"
        assert answer.headers["retry-after"] == "1"
        body: dict[str, Any] = answer.json()
        assert body["error"]["code"] == "shutting_down"
    assert [p.status_code for p in probes] == [200, 200]


@pytest.mark.parametrize(
    ("grace", "delay", "expected"), [(30.0, 0.0, 32), (30.0, 5.0, 27), (0.0, 5.0, 2)]
)
def test_uvicorn_waits_for_what_is_left_of_the_grace(
    grace: float, delay: float, expected: int
) -> None:
    settings = ServerSettings(shutdown_grace_s=grace, drain_delay_s=delay)
    assert uvicorn_grace_s(settings) == expected
