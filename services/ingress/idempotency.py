"""``Idempotency-Key`` on chat completions and embeddings.

A request with the header claims a record in the ``igw_idempotency`` KV bucket
(``kv.create``) after it is authorized and validated and before it is
published. A repeat within ``idempotency.ttl_s``:

* with the same body, once the original answered: gets the stored answer,
  marked ``x-idempotent-replayed: true``; it reaches no provider and is never
  billed;
* with the same body, while the original runs: watches the record until the
  original answers, then replays it. If the record is still in flight
  ``takeover_after_s`` past the original's deadline (its ingress died), the
  repeat takes it over by compare-and-set and runs the request itself;
* with a different body: 409 ``idempotency_key_reused``.

Who settles a claim: the handler that won it, exactly once. ``Claim.finish``
stores a successful answer and forgets a failed one; a stream is handed a
``Claim.tap``, which stores the stream's text once it ended cleanly and forgets
the claim otherwise (an error event, a client that left); ``Claim.release``
forgets it when the handler is abandoned. A forgotten record is deleted, so a
retry runs afresh. Every write is a compare-and-set on the claim's revision,
so a late original never overwrites the repeat that took it over.

A record's key is a SHA-256 of the caller (its key's token, ``master`` or
``open``) and the header, so two tenants' keys never collide; neither the
header nor the hash is logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Coroutine, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
from nats.errors import Error as NatsError
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from starlette.responses import Response

from schemas.bus import ErrorInfo, ReplyMeta
from schemas.idempotency import IdempotencyRecord
from services.ingress.auth import OPEN, Principal
from services.runtime.errors import Conflict, InvalidRequest, ServiceUnavailable
from services.runtime.settings import IdempotencySettings

if TYPE_CHECKING:
    from services.ingress.sse import Renderer

log = logging.getLogger("igw.ingress.idempotency")

HEADER = "idempotency-key"
REPLAYED = "x-idempotent-replayed"
MAX_KEY_CHARS = 255
KEPT_HEADERS = ("x-request-id", "x-igw-provider", "x-igw-deployment", "x-igw-attempts")
"""Headers of the original answer that a replay repeats."""
SSE = "text/event-stream"
JSON = "application/json"
STORE_TIMEOUT_S = 2.0
MAX_ROUNDS = 8
"""Claims attempted before giving up on a key that keeps changing hands."""

T = TypeVar("T")


def check_key(value: str) -> str:
    """The header's value; 400 when it is empty or too long."""
    if not value.strip() or len(value) > MAX_KEY_CHARS:
        raise InvalidRequest(
            f"the Idempotency-Key header must hold 1 to {MAX_KEY_CHARS} characters",
            param="Idempotency-Key",
            code="invalid_idempotency_key",
        )
    return value


def identity(principal: Principal) -> str:
    """Whose keys these are: a virtual key's token, the master key, or anyone (open)."""
    if principal.token is not None:
        return principal.token
    return "open" if principal is OPEN else "master"


def record_key(caller: str, value: str) -> str:
    return hashlib.sha256(f"{caller}\0{value}".encode()).hexdigest()


def body_hash(body: Mapping[str, Any]) -> str:
    """SHA-256 of the body as canonical JSON (sorted keys): key order does not matter."""
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def kept_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {name: value for name in KEPT_HEADERS if (value := headers.get(name)) is not None}


def replay(record: IdempotencyRecord) -> Response:
    headers = {**record.headers, REPLAYED: "true"}
    if record.media_type == SSE:
        headers["cache-control"] = "no-store"
    return Response(
        record.body,
        status_code=record.status or 200,
        media_type=record.media_type or JSON,
        headers=headers,
    )


def _dump(record: IdempotencyRecord) -> bytes:
    return record.model_dump_json().encode()


class IdempotencyStore:
    def __init__(self, kv: KeyValue, settings: IdempotencySettings) -> None:
        self._kv = kv
        self.settings = settings
        self._tasks: set[asyncio.Task[None]] = set()

    async def begin(
        self,
        value: str,
        principal: Principal,
        body: Mapping[str, Any],
        request_id: str,
        timeout_s: float,
    ) -> Claim | Response:
        """Claim the key for this request, or answer it from the original.

        Raises ``InvalidRequest`` (a bad header), ``Conflict`` (the key was used
        with another body) or ``ServiceUnavailable`` (the store does not answer).
        """
        key = record_key(identity(principal), check_key(value))
        digest = body_hash(body)
        for _ in range(MAX_ROUNDS):
            mine = IdempotencyRecord(
                state="in_flight",
                body_hash=digest,
                request_id=request_id,
                deadline=time.time() + timeout_s,
            )
            with contextlib.suppress(KeyWrongLastSequenceError):  # taken: look at it
                return Claim(self, key, await self._call(self._kv.create(key, _dump(mine))), mine)
            found = await self._load(key)
            if found is None:
                continue  # its holder forgot it in between: claim it again
            record, revision = found
            if record.body_hash != digest:
                raise Conflict(
                    "this Idempotency-Key was already used with a different request body; "
                    "send a new key for a new request",
                    code="idempotency_key_reused",
                )
            if record.state == "done":
                return replay(record)
            if await self._changes(key, revision, record.deadline + self.settings.takeover_after_s):
                continue  # answered, forgotten or taken over: look again
            with contextlib.suppress(KeyWrongLastSequenceError):  # else another repeat won
                revision = await self._call(self._kv.update(key, _dump(mine), last=revision))
                log.warning(
                    "request %s takes over %s, which never answered", request_id, record.request_id
                )
                return Claim(self, key, revision, mine)
        raise ServiceUnavailable("this Idempotency-Key keeps changing hands; retry shortly")

    async def _call(self, op: Awaitable[T]) -> T:
        """One store operation, bounded; the store's absence is a 503 (fail closed:
        running the request unguarded could bill it twice)."""
        try:
            async with asyncio.timeout(STORE_TIMEOUT_S):
                return await op
        except (KeyWrongLastSequenceError, KeyNotFoundError):
            raise
        except (TimeoutError, NatsError) as exc:
            log.warning("the idempotency store did not answer: %s", type(exc).__name__)
            raise ServiceUnavailable(
                "the idempotency store is unavailable; retry shortly"
            ) from None

    async def _load(self, key: str) -> tuple[IdempotencyRecord, int] | None:
        try:
            entry = await self._call(self._kv.get(key))
        except KeyNotFoundError:  # deleted or expired
            return None
        assert entry.revision is not None
        return IdempotencyRecord.model_validate_json(entry.value or b""), entry.revision

    async def _changes(self, key: str, revision: int, until: float) -> bool:
        """Whether the record moves on from ``revision`` before ``until`` (epoch seconds)."""
        watcher = await self._call(self._kv.watch(key))
        try:
            async with asyncio.timeout(max(0.0, until - time.time())):
                async for entry in watcher:
                    if entry is not None and entry.revision != revision:
                        return True
        except TimeoutError:
            return False
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()  # type: ignore[no-untyped-call]
        return True

    async def complete(
        self, claim: Claim, status: int, media_type: str, body: bytes, headers: dict[str, str]
    ) -> None:
        """Store the answer (if it fits), or forget the claim; never raises."""
        if len(body) <= self.settings.max_response_bytes:
            done = claim.record.finished(status, media_type, body, headers)
            try:
                async with asyncio.timeout(STORE_TIMEOUT_S):
                    await self._kv.update(claim.key, _dump(done), last=claim.revision)
                return
            except KeyWrongLastSequenceError:  # a repeat took over after our deadline: its now
                return
            except Exception as exc:  # too large for the bus, or the bus is down
                log.warning(
                    "could not keep the answer to %s for its Idempotency-Key: %s",
                    claim.record.request_id,
                    type(exc).__name__,
                )
        await self.forget(claim)

    async def forget(self, claim: Claim) -> None:
        """Delete the record if it is still this claim's, so a retry runs afresh."""
        try:
            async with asyncio.timeout(STORE_TIMEOUT_S):
                await self._kv.delete(claim.key, last=claim.revision)
        except Exception as exc:  # not ours any more, or the bus is down (a repeat takes over)
            log.debug("could not forget %s: %s", claim.record.request_id, type(exc).__name__)

    def later(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


@dataclass(frozen=True, slots=True)
class Claim:
    """This request holds the key (see the module docstring for who settles it)."""

    store: IdempotencyStore
    key: str
    revision: int
    record: IdempotencyRecord

    async def finish(self, response: Response) -> Response:
        """Keep a successful answer, forget a failed one; returns ``response``."""
        if 200 <= response.status_code < 300:
            media_type = response.media_type or JSON
            headers = kept_headers(response.headers)
            body = bytes(response.body)
            await self.store.complete(self, response.status_code, media_type, body, headers)
        else:
            await self.store.forget(self)
        return response

    def release(self) -> None:
        """Forget the claim in the background (the handler was abandoned)."""
        self.store.later(self.store.forget(self))

    def tap(self, headers: Mapping[str, str]) -> StreamTap:
        return StreamTap(self, kept_headers(headers))


class StreamTap:
    """Records a stream as its client receives it; see ``sse.stream_response``.

    ``wrap`` the renderer (to see every event and whether the stream finished
    cleanly), then ``watch`` the events (to learn when the stream is over).
    """

    def __init__(self, claim: Claim, headers: dict[str, str]) -> None:
        self._claim = claim
        self._headers = headers
        self._limit = claim.store.settings.max_response_bytes
        self._parts: list[bytes] = []
        self._size = 0
        self.complete = False

    def wrap(self, render: Renderer) -> Renderer:
        return _Recording(self, render)

    def keep(self, data: bytes) -> bytes:
        self._size += len(data)
        if self._size <= self._limit:
            self._parts.append(data)
        else:
            self._parts.clear()
        return data

    async def watch(self, events: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        try:
            async for data in events:
                yield data
        finally:
            claim = self._claim
            if self.complete and self._size <= self._limit:
                body = b"".join(self._parts)
                claim.store.later(claim.store.complete(claim, 200, SSE, body, self._headers))
            else:
                claim.release()


class _Recording:
    def __init__(self, tap: StreamTap, inner: Renderer) -> None:
        self._tap = tap
        self._inner = inner

    def chunk(self, payload: bytes) -> bytes:
        return self._tap.keep(self._inner.chunk(payload))

    def done(self, meta: ReplyMeta) -> bytes:
        self._tap.complete = True
        return self._tap.keep(self._inner.done(meta))

    def error(self, info: ErrorInfo) -> bytes:
        return self._inner.error(info)
