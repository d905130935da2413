"""The ingress application: FastAPI for the HTTP surface; the request path is
dispatched by a thin ASGI layer in front of it (see ``fastpath``)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from schemas import subjects as s
from services.ingress import (
    admin_keys,
    admin_people,
    analytics,
    batches,
    chat,
    dashboard,
    embeddings,
    files,
    infer,
    messages,
    meta,
    status,
)
from services.ingress.auth import KeyStore
from services.ingress.cache import ResponseCache
from services.ingress.context import IngressContext
from services.ingress.fastpath import FastPath
from services.ingress.http_errors import install_handlers
from services.ingress.idempotency import IdempotencyStore
from services.ingress.replies import ReplyMux
from services.runtime.admission import Admission
from services.runtime.bus import connect, wait_for_streams
from services.runtime.file_store import FileStore
from services.runtime.gc_tuning import tune_gc
from services.runtime.metrics import IngressMetrics
from services.runtime.settings import Settings
from services.runtime.version import VERSION

log = logging.getLogger("igw.ingress")
UNTRACED_PATHS = frozenset({"/health", "/ready", "/metrics"})


def create_app(settings: Settings) -> FastPath:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        nc = await connect(settings, "ingress")
        js = nc.jetstream()
        await wait_for_streams(
            js,
            [
                s.STREAM_REQUESTS,
                s.KV_CACHE_STREAM,
                s.KV_KEYS_STREAM,
                s.KV_IDEMPOTENCY_STREAM,
                s.KV_SPEND_STREAM,
                s.KV_LIMITS_STREAM,
                s.OBJ_FILES_STREAM,
                s.KV_BATCHES_STREAM,
            ],
            wait_s=30.0,
        )
        cache = ResponseCache(await js.key_value(s.KV_CACHE))
        keys = KeyStore(settings.auth)
        await keys.start(await js.key_value(s.KV_KEYS))
        if keys.open:
            log.warning(
                "NO MASTER KEY IS SET: the gateway is open to anyone who can reach it. "
                "Set IGW_MASTER_KEY (or auth.master_key) before exposing it."
            )
        metrics = IngressMetrics()
        mux = ReplyMux(
            nc,
            IngressContext.new_ingress_id(),
            settings.server.stream_buffer_chunks,
            observer=metrics.closed,
        )
        metrics.track_in_flight(lambda: mux.in_flight)
        await mux.start()
        app.state.ctx = IngressContext(
            settings=settings,
            nc=nc,
            js=js,
            mux=mux,
            metrics=metrics,
            aliases=settings.aliases(),
            cache=cache,
            keys=keys,
            idempotency=IdempotencyStore(
                await js.key_value(s.KV_IDEMPOTENCY), settings.idempotency
            ),
            admission=Admission(
                settings,
                keys,
                spend=await js.key_value(s.KV_SPEND),
                limits=await js.key_value(s.KV_LIMITS),
                leases=True,
            ),
            files=FileStore(await js.object_store(s.OBJ_FILES)),
        )
        tune_gc()
        log.info(
            "ingress listening on http://%s:%d (models: %s)",
            settings.server.host,
            settings.server.port,
            ", ".join(sorted(settings.aliases())),
        )
        try:
            yield
        finally:
            await keys.stop()
            if app.state.ctx.admission is not None:
                await app.state.ctx.admission.close()
            await nc.drain()

    app = FastAPI(
        title="IGW",
        version=VERSION,
        description="An OpenAI-compatible, queue-based LLM inference broker.",
        lifespan=lifespan,
        telemetry={"auto_configure": False, "exclude": _untraced},
    )
    install_handlers(app)
    for path in ("/v1/chat/completions", "/chat/completions"):
        app.router.add_route(path, chat.chat_completions, methods=["POST"])
    for path in ("/v1/embeddings", "/embeddings"):
        app.router.add_route(path, embeddings.create_embeddings, methods=["POST"])
    app.router.add_route("/v1/batches", batches.create_batch, methods=["POST"])
    app.router.add_route("/v1/batches", batches.list_batches, methods=["GET"])
    app.router.add_route("/v1/batches/{batch_id}", batches.retrieve_batch, methods=["GET"])
    app.router.add_route("/v1/batches/{batch_id}/cancel", batches.cancel_batch, methods=["POST"])
    app.router.add_route("/v1/files", files.create_file, methods=["POST"])
    app.router.add_route("/v1/files", files.list_files, methods=["GET"])
    app.router.add_route("/v1/files/{file_id}", files.retrieve_file, methods=["GET"])
    app.router.add_route("/v1/files/{file_id}", files.delete_file, methods=["DELETE"])
    app.router.add_route("/v1/files/{file_id}/content", files.file_content, methods=["GET"])
    app.router.add_route("/v1/messages", messages.create_message, methods=["POST"])
    app.router.add_route("/infer", infer.infer, methods=["POST"])
    app.router.add_route("/key/generate", admin_keys.generate_key, methods=["POST"])
    app.router.add_route("/key/info", admin_keys.key_info, methods=["GET"])
    app.router.add_route("/key/update", admin_keys.update_key, methods=["POST"])
    app.router.add_route("/key/delete", admin_keys.delete_keys, methods=["POST"])
    app.router.add_route("/key/list", admin_keys.list_keys, methods=["GET"])
    app.router.add_route("/user/new", admin_people.new_user, methods=["POST"])
    app.router.add_route("/user/info", admin_people.user_info, methods=["GET"])
    app.router.add_route("/team/new", admin_people.new_team, methods=["POST"])
    app.router.add_route("/team/info", admin_people.team_info, methods=["GET"])
    app.router.add_route("/v1/models", meta.list_models, methods=["GET"])
    app.router.add_route("/api/v1/providers/status", status.providers_status, methods=["GET"])
    app.router.add_route("/api/v1/usage", analytics.usage, methods=["GET"])
    app.router.add_route("/analytics/usage-by-key", analytics.usage_by_key, methods=["GET"])
    app.router.add_route("/analytics/spend", analytics.spend, methods=["GET"])
    app.router.add_route("/analytics/latency", analytics.latency, methods=["GET"])
    app.router.add_route("/analytics/errors", analytics.errors, methods=["GET"])
    app.router.add_route("/dashboard", dashboard.dashboard, methods=["GET"])
    app.router.add_route("/health", meta.health, methods=["GET"])
    app.router.add_route("/ready", meta.ready, methods=["GET"])
    app.router.add_route("/metrics", meta.metrics, methods=["GET"])
    hot = {("POST", "/v1/chat/completions"): chat.chat_completions}
    return FastPath(app, hot)


def _untraced(scope: MutableMapping[str, Any]) -> bool:
    """Requests FastAPI makes no HTTP span for (with tracing on): probes, and the key
    admin API, whose query strings can hold a key (``/key/info?key=...``)."""
    path = str(scope.get("path", ""))
    return path in UNTRACED_PATHS or path.startswith("/key/")
