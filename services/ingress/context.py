"""What the ingress's handlers share: settings, the NATS connection, the reply mux."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field

from nats.aio.client import Client
from nats.js import JetStreamContext

from schemas import subjects as s
from schemas.bus import Cancel
from services.ingress.auth import KeyStore
from services.ingress.cache import ResponseCache
from services.ingress.idempotency import IdempotencyStore
from services.ingress.replies import ReplyMux
from services.runtime.admission import Admission
from services.runtime.file_store import FileStore
from services.runtime.metrics import IngressMetrics
from services.runtime.settings import ModelDeployment, Settings

log = logging.getLogger("igw.ingress")


@dataclass
class IngressContext:
    settings: Settings
    nc: Client
    js: JetStreamContext
    mux: ReplyMux
    aliases: dict[str, ModelDeployment]
    cache: ResponseCache | None = None
    keys: KeyStore | None = None
    idempotency: IdempotencyStore | None = None
    admission: Admission | None = None
    files: FileStore | None = None
    metrics: IngressMetrics = field(default_factory=IngressMetrics)
    started: float = field(default_factory=time.time)
    draining: bool = False
    """Shutting down: no new requests, /ready answers 503 (see ``shutdown``)."""
    _background: set[asyncio.Task[None]] = field(default_factory=set)

    def cancel(self, request_id: str, reason: str, keep_attempt: int | None = None) -> None:
        """Tell the worker to stop the upstream call (every attempt but ``keep_attempt``);
        never blocks the caller."""
        cancel = Cancel(request_id=request_id, reason=reason, keep_attempt=keep_attempt)
        payload = cancel.model_dump_json().encode()
        task = asyncio.get_running_loop().create_task(
            self._publish(s.cancel_subject(request_id), payload)
        )
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _publish(self, subject: str, payload: bytes) -> None:
        try:
            await self.nc.publish(subject, payload)
        except Exception as exc:  # the bus is down: the worker's deadline still stops it
            log.warning("could not publish %s: %s", subject, exc)

    @staticmethod
    def new_ingress_id() -> str:
        return uuid.uuid4().hex[:12]
