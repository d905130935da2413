"""serve(): readiness, in-process stats handle, clean stop on cancellation."""

from __future__ import annotations

import asyncio
import contextlib

import httpx
import pytest

from services.simulator.app import create_app
from services.simulator.server import bind_socket, serve

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_serve_until_cancelled() -> None:
    app = create_app()
    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    ready = asyncio.Event()
    server = asyncio.create_task(serve(ready=ready, app=app, sock=sock))
    await ready.wait()

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        response = await http.post(
            "/v1/chat/completions", json={"model": "sim", "messages": [{"role": "user"}]}
        )
        assert response.status_code == 200
        assert (await http.get("/nope")).json()["error"]["type"] == "invalid_request_error"
    assert app.stats.completed == 1
    assert await app.stats.wait_for("completed", 1, 0.1)

    server.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await server
    assert server.cancelled()
    with pytest.raises(OSError):  # nothing listens any more
        await asyncio.open_connection("127.0.0.1", port)


async def test_serve_reports_a_busy_port() -> None:
    taken = bind_socket("127.0.0.1", 0)
    taken.listen()
    try:
        with pytest.raises(OSError):
            await serve(port=taken.getsockname()[1])
    finally:
        taken.close()
