"""Running batches over the same router and workers as interactive traffic.

A submission (``igw.batch.submit``) is checked, its items are stored as an
input file (inline items become one), and the batch goes ``in_progress``.
Items are published as ordinary requests at ``batch`` priority, at most
``batch.max_in_flight`` at a time per batch, with request id
``<batch_id>-<n>`` (its ``Nats-Msg-Id``, so re-publishing after a crash stores
it once) and reply subject ``igw.batch.reply.<batch_id>.<n>``, which the
IGW_BATCH stream keeps. Each terminal reply becomes one output line on
``igw.batch.results.<batch_id>`` and one count in the batch state, set in the
same compare-and-set as the item's done bit, then the next item goes out.
When every item has answered (or a cancel or the completion window ended the
batch and nothing is in flight), the output and error files are written and
the batch is ``completed``, ``cancelled`` or ``expired``.

Every step is repeatable: state lives in KV, replies and results in
JetStream, files in the object store, so a runner that dies anywhere resumes
from them (``resume``), and replicas can share the work.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time

import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue
from pydantic import ValidationError

from schemas import subjects as s
from schemas.batch import (
    BatchError,
    BatchErrors,
    BatchObject,
    BatchRequestLine,
    BatchResultLine,
    BatchState,
    BatchStatus,
    BatchSubmission,
    RequestCounts,
    pending_key,
    state_key,
)
from schemas.bus import Cancel, InferenceRequest, ReplyMeta
from schemas.keys import KeyRecord
from services.batch.people import People
from services.batch.results import (
    answered,
    compact,
    dispatched_to,
    is_done,
    refusal_line,
    result_line,
)
from services.batch.state import mark, window_s
from services.runtime import tracing
from services.runtime.admission import Admission, Ticket
from services.runtime.batch_input import BatchInputError, check_batch_input
from services.runtime.errors import (
    BudgetExceeded,
    GatewayError,
    ModelNotFound,
    PermissionDenied,
    RateLimited,
    ServiceUnavailable,
)
from services.runtime.file_store import FileStore
from services.runtime.keyhash import hasher, key_hash
from services.runtime.kvcas import KvCas
from services.runtime.metrics import BatchMetrics
from services.runtime.principal import OPEN, Principal
from services.runtime.settings import Settings

log = logging.getLogger("igw.batch")

CANCEL_GRACE_S = 5.0
"""How long a cancelled or expired batch waits for the answers of items already
running; a stopped item may never answer (its worker dropped it), so after
this the batch ends without them."""


class Refused(Exception):
    def __init__(self, error: BatchError) -> None:
        super().__init__(error.message)
        self.error = error


class BatchRunner:
    def __init__(
        self,
        settings: Settings,
        nc: Client,
        js: JetStreamContext,
        batches: KeyValue,
        keys: KeyValue,
        files: FileStore,
        admission: Admission,
        people: People,
    ) -> None:
        self.settings = settings
        self.nc, self.js = nc, js
        self.states = KvCas(batches, BatchState, timeout_s=10.0)
        self.keys = keys
        self.files = files
        self.admission = admission
        self.people = people
        self._items: dict[str, list[BatchRequestLine]] = {}
        self._tickets: dict[str, Ticket] = {}
        self.metrics = BatchMetrics()

    # -- submission -----------------------------------------------------------

    async def submit(self, data: bytes) -> None:
        try:
            sub = BatchSubmission.model_validate_json(data)
        except ValidationError as exc:
            log.warning("dropping a malformed batch submission: %s", exc.errors()[:2])
            return
        existing, _ = await self.states.read(state_key(sub.batch_id))
        if existing.batch is not None:  # a redelivered submission: carry on where it is
            await self.advance(sub.batch_id)
            return
        now = int(time.time())
        batch = BatchObject(
            id=sub.batch_id,
            endpoint=sub.endpoint,
            completion_window=sub.completion_window,
            created_at=now,
            metadata=sub.metadata,
        )
        state = BatchState(batch=batch)
        try:
            expires = window_s(sub.completion_window)
            record = None if sub.admin else await self._resolve(sub.key, sub.key_id)
            state.key_id = record.token if record else None
            state.tenant = record.team_id if record else None
            state.user_id = record.user_id if record else None
            items, file_id = await self._items_of(sub, record)
        except Refused as refused:
            batch.errors = BatchErrors(data=[refused.error])
            mark(batch, "failed")
        except ValueError as exc:
            batch.errors = BatchErrors(data=[BatchError(code="invalid_window", message=str(exc))])
            mark(batch, "failed")
        else:
            self._items[sub.batch_id] = items
            batch.input_file_id = file_id
            batch.request_counts = RequestCounts(total=len(items))
            batch.expires_at = now + int(expires)
            mark(batch, "in_progress")

        def create(current: BatchState) -> bool:
            if current.batch is not None:
                return False
            current.__dict__.update(state.__dict__)
            return True

        if await self.states.change(state_key(sub.batch_id), create):
            if batch.status == "failed":
                self.metrics.batches.labels("failed").inc()
            await self._announce(batch)
        with contextlib.suppress(Exception):  # the HTTP API's placeholder, if any
            await self.states.kv.delete(pending_key(sub.batch_id))
        await self.advance(sub.batch_id)

    async def _resolve(self, key: str | None, key_id: str | None) -> KeyRecord | None:
        auth = self.settings.auth
        if key_id is not None:
            token = key_id  # from the gateway's HTTP API, which checked the key
        elif auth.master_key is None:
            return None  # an open gateway: batches run unattributed
        elif key is None:
            raise Refused(BatchError(code="missing_api_key", message="the batch names no key"))
        elif key == auth.master_key.get_secret_value():
            return None
        else:
            token = key_hash(hasher(auth), key)
        try:
            entry = await self.keys.get(token)
            record = KeyRecord.model_validate_json(entry.value or b"")
        except (KeyNotFoundError, ValidationError):
            raise Refused(BatchError(code="invalid_api_key", message="invalid API key")) from None
        if record.blocked or (record.expires is not None and record.expires <= time.time()):
            raise Refused(
                BatchError(code="invalid_api_key", message="the key is revoked or expired")
            )
        return record

    async def _items_of(
        self, sub: BatchSubmission, record: KeyRecord | None
    ) -> tuple[list[BatchRequestLine], str]:
        if (sub.items is None) == (sub.input_file_id is None):
            raise Refused(
                BatchError(code="invalid_request", message="give either items or input_file_id")
            )
        if sub.items is not None:
            raw = b"".join(orjson.dumps(item.model_dump()) + b"\n" for item in sub.items)
            file_id = f"file-{compact(sub.batch_id)}input"
        else:
            assert sub.input_file_id is not None
            downloaded = await self.files.download(sub.input_file_id)
            if downloaded is None:
                raise Refused(BatchError(code="file_not_found", message="no such input file"))
            stored, body = downloaded
            with body:
                raw = body.read()
            if stored.owner is not None and record is not None and stored.owner != record.token:
                raise Refused(BatchError(code="file_not_found", message="no such input file"))
            file_id = sub.input_file_id
        lines = raw.splitlines()
        try:
            check_batch_input(
                lines,
                max_items=self.settings.batch.max_items,
                max_line_bytes=self.settings.server.max_body_bytes,
                check_model=lambda model: self._check_model(model, record),
            )
        except BatchInputError as exc:
            raise Refused(exc.error) from None
        if sub.items is not None:
            await self.files.put(
                file_id, io.BytesIO(raw), filename=f"{sub.batch_id}.jsonl", purpose="batch",
                owner=record.token if record else None,
            )  # fmt: skip
        return [
            BatchRequestLine.model_validate_json(line) for line in lines if line.strip()
        ], file_id

    def _check_model(self, model: str, record: KeyRecord | None) -> None:
        aliases = {m.alias for m in self.settings.models}
        auto = self.settings.routing.auto
        if model not in aliases and not (auto.enabled and model == auto.alias):
            raise ModelNotFound(f"the model `{model}` does not exist", param="model")
        if record is not None and record.models and model not in record.models:
            raise PermissionDenied(f"this key may not use model `{model}`", param="model")

    # -- dispatch ---------------------------------------------------------------

    async def advance(self, batch_id: str) -> None:
        """Send the next items, or finish the batch when nothing is left to wait for."""
        state, _ = await self.states.read(state_key(batch_id))
        if state.batch is None or state.finished:
            return
        batch = state.batch
        if batch.status == "in_progress" and batch.expires_at and time.time() >= batch.expires_at:
            await self.stop(batch_id, "expired")
            return
        if batch.status == "in_progress":
            room = self.settings.batch.max_in_flight - state.in_flight
            end = min(batch.request_counts.total, state.dispatched + max(room, 0))
            if end > state.dispatched:
                sent = await self._dispatch(state, state.dispatched, end)
                if sent > state.dispatched:
                    await self.states.change(state_key(batch_id), dispatched_to(sent))
                return
        stopped_long_ago = (
            batch.status == "cancelling"
            and time.time() >= (batch.cancelling_at or 0) + CANCEL_GRACE_S
        )
        if stopped_long_ago or (
            state.in_flight <= 0
            and (batch.status != "in_progress" or state.answered >= batch.request_counts.total)
        ):
            await self.finish(batch_id)

    async def _dispatch(self, state: BatchState, start: int, end: int) -> int:
        """Publish items ``start..end-1`` past the key's budgets and limits; returns
        the index it got to (a rate limit or an unreachable store pauses the batch
        until the next sweep; an exhausted budget fails that item)."""
        assert state.batch is not None
        batch = state.batch
        items = await self._load(batch)
        deadline = float(batch.expires_at or time.time() + 86400)
        principal = await self._principal(state)
        for index in range(start, end):
            item = items[index]
            request_id = s.batch_request_id(batch.id, index)
            model = str(item.body.get("model", ""))
            lapse = min(deadline, time.time() + self.settings.server.request_timeout_s)
            try:
                ticket = await self.admission.admit(principal, model, item.body, request_id, lapse)
            except BudgetExceeded as refused:
                await self._record(batch.id, index, refusal_line(request_id, item, refused))
                continue
            except (RateLimited, ServiceUnavailable) as paused:
                log.info("batch %s waits at item %d: %s", batch.id, index, paused.message)
                return index
            if ticket is not None:
                self._tickets[request_id] = ticket
            request = InferenceRequest(
                request_id=request_id,
                created_at=time.time(),
                deadline=deadline,
                priority="batch",
                key_id=state.key_id,
                tenant=state.tenant,
                user_id=state.user_id,
                model=model,
                operation="embeddings" if item.url == "/v1/embeddings" else "chat",
                reply_subject=s.batch_reply_subject(batch.id, index),
                batch_id=batch.id,
                body={k: v for k, v in item.body.items() if k not in ("stream", "stream_options")},
            )
            with tracing.batch_item_span(batch.id, request_id):
                await self.js.publish(
                    s.request_subject("batch"),
                    request.model_dump_json().encode(),
                    headers=tracing.inject({s.HEADER_MSG_ID: request_id}),
                    timeout=5.0,
                )
        return end

    async def _principal(self, state: BatchState) -> Principal:
        """Who the batch runs as, with the key's current record (limits may change)."""
        if state.key_id is None:
            return OPEN
        try:
            entry = await self.keys.get(state.key_id)
            record = KeyRecord.model_validate_json(entry.value or b"")
        except (KeyNotFoundError, ValidationError):
            return Principal(role="user", token=state.key_id)
        await self.people.load(self.keys, record)
        return Principal(
            role=record.role,
            token=record.token,
            models=tuple(record.models),
            user_id=record.user_id,
            team_id=record.team_id,
            record=record,
        )

    async def _record(self, batch_id: str, index: int, line: BatchResultLine) -> None:
        """Publish one item's result and count it (once, whatever is redelivered)."""
        await self.js.publish(
            s.batch_results_subject(batch_id),
            line.model_dump_json().encode(),
            headers={s.HEADER_MSG_ID: f"{batch_id}:{index}"},
            timeout=5.0,
        )
        await self.states.change(state_key(batch_id), answered(index, line.succeeded))

    async def _load(self, batch: BatchObject) -> list[BatchRequestLine]:
        items = self._items.get(batch.id)
        if items is None:
            assert batch.input_file_id is not None
            downloaded = await self.files.download(batch.input_file_id)
            if downloaded is None:
                raise GatewayError(f"the input file of {batch.id} is gone")
            _, body = downloaded
            with body:
                lines = body.read().splitlines()
            items = [BatchRequestLine.model_validate_json(line) for line in lines if line.strip()]
            self._items[batch.id] = items
        return items

    # -- replies --------------------------------------------------------------------

    async def on_reply(self, msg: Msg) -> None:
        """One event from a worker about a batch item; only the terminal one counts."""
        _, _, _, batch_id, index_text = msg.subject.split(".", 4)
        header = (msg.headers or {}).get(s.HEADER_REPLY)
        if header is None or not index_text.isdigit():
            return
        meta = ReplyMeta.model_validate_json(header)
        if meta.kind != "terminal":
            return
        index = int(index_text)
        state, _ = await self.states.read(state_key(batch_id))
        if state.batch is None:
            return
        items = await self._load(state.batch)
        await self._record(batch_id, index, result_line(meta, msg.data, items[index].custom_id))
        ticket = self._tickets.pop(meta.request_id, None)
        if ticket is not None:
            self.admission.finish(ticket, meta)
        await self.advance(batch_id)

    # -- cancel, expiry, finish -------------------------------------------------

    async def stop(self, batch_id: str, why: str) -> None:
        """Cancel (``why="cancelled"``) or expire a batch: send nothing more, stop what
        is in flight, and finish once it has answered."""

        def stopping(state: BatchState) -> bool:
            if state.batch is None or state.finished or state.batch.status != "in_progress":
                return False
            mark(state.batch, "cancelling")
            state.batch.metadata = {**(state.batch.metadata or {}), "igw_end": why}
            return True

        if await self.states.change(state_key(batch_id), stopping):
            state, _ = await self.states.read(state_key(batch_id))
            assert state.batch is not None
            await self._announce(state.batch)
            for index in range(state.dispatched):
                if not is_done(state, index):
                    cancel = Cancel(request_id=s.batch_request_id(batch_id, index), reason=why)
                    await self.nc.publish(
                        s.cancel_subject(cancel.request_id), cancel.model_dump_json().encode()
                    )
        await self.advance(batch_id)

    async def finish(self, batch_id: str) -> None:
        state, _ = await self.states.read(state_key(batch_id))
        if state.batch is None or state.finished:
            return
        batch = state.batch
        lines = await self._results(batch_id)
        owner = state.key_id
        out_ids: dict[str, str | None] = {"output": None, "error": None}
        for kind, keep in (("output", True), ("error", False)):
            chosen = [line for line in lines if line.succeeded is keep]
            if not chosen:
                continue
            file_id = f"file-{compact(batch_id)}{kind}"
            raw = b"".join(line.model_dump_json().encode() + b"\n" for line in chosen)
            await self.files.put(
                file_id, io.BytesIO(raw), filename=f"{batch_id}_{kind}.jsonl",
                purpose="batch_output", owner=owner,
            )  # fmt: skip
            out_ids[kind] = file_id
        end = (batch.metadata or {}).get("igw_end")
        final: BatchStatus = "completed"
        if batch.status != "in_progress":
            final = "expired" if end == "expired" else "cancelled"

        def finished(current: BatchState) -> bool:
            if current.batch is None or current.finished:
                return False
            current.batch.output_file_id = out_ids["output"]
            current.batch.error_file_id = out_ids["error"]
            if current.batch.metadata:
                current.batch.metadata.pop("igw_end", None)
                current.batch.metadata = current.batch.metadata or None
            mark(current.batch, "finalizing")
            mark(current.batch, final)
            return True

        if await self.states.change(state_key(batch_id), finished):
            done, _ = await self.states.read(state_key(batch_id))
            assert done.batch is not None
            await self._announce(done.batch)
            self._items.pop(batch_id, None)
            counts = done.batch.request_counts
            self.metrics.items.labels("ok").inc(counts.completed)
            self.metrics.items.labels("error").inc(counts.failed)
            self.metrics.batches.labels(final).inc()
            log.info("batch %s %s: %s", batch_id, final, counts)

    async def _results(self, batch_id: str) -> list[BatchResultLine]:
        """Every result line of a batch, once each (by custom_id)."""
        subject = s.batch_results_subject(batch_id)
        info = await self.js.stream_info(s.STREAM_BATCH, subjects_filter=subject)
        stored = (info.state.subjects or {}).get(subject, 0)
        lines: dict[str, BatchResultLine] = {}
        if not stored:
            return []
        sub = await self.js.subscribe(
            subject, stream=s.STREAM_BATCH, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
        )
        try:
            for _ in range(stored):
                msg = await sub.next_msg(timeout=10.0)
                line = BatchResultLine.model_validate_json(msg.data)
                lines[line.custom_id] = line
        finally:
            await sub.unsubscribe()
        return list(lines.values())

    async def _announce(self, batch: BatchObject) -> None:
        await self.js.publish(
            s.batch_status_subject(batch.id), batch.model_dump_json().encode(), timeout=5.0
        )

    async def resume(self) -> None:
        """Carry on every batch that is not finished (after a restart)."""
        try:
            keys = await self.states.kv.keys()
        except Exception:  # nats-py raises when the bucket is empty
            return
        for key in keys:
            if key.startswith("batch."):
                batch_id = key.removeprefix("batch.")
                try:
                    await self.advance(batch_id)
                except Exception:
                    log.exception("could not resume batch %s", batch_id)
