"""Entry point: ``igw ingress`` (uvicorn with uvloop and httptools; SIGTERM drains it,
see ``shutdown``)."""

from __future__ import annotations

import uvicorn

from services.ingress.app import create_app
from services.ingress.shutdown import DrainingServer, uvicorn_grace_s
from services.runtime.settings import Settings


def serve(settings: Settings) -> None:
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.server.host,
        port=settings.server.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level="warning",
        log_config=None,
        timeout_graceful_shutdown=uvicorn_grace_s(settings.server),
        timeout_keep_alive=30,
        backlog=4096,
    )
    DrainingServer(config, app, settings.server).run()
