"""Entry point: ``igw ingress`` (uvicorn with uvloop and httptools)."""

from __future__ import annotations

import uvicorn

from services.ingress.app import create_app
from services.runtime.settings import Settings


def serve(settings: Settings) -> None:
    config = uvicorn.Config(
        create_app(settings),
        host=settings.server.host,
        port=settings.server.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level="warning",
        log_config=None,
        timeout_graceful_shutdown=30,
        timeout_keep_alive=30,
        backlog=4096,
    )
    uvicorn.Server(config).run()
