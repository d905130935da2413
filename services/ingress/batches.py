"""``/v1/batches``: OpenAI's Batch API over the batch service.

``POST /v1/batches`` (``input_file_id``, ``endpoint``, ``completion_window``,
``metadata``) checks the input file and publishes a submission on
``igw.batch.submit``, exactly as a NATS client would, with the caller's key
token; the batch service runs it. ``GET /v1/batches/{id}`` and
``GET /v1/batches`` read the batch state from the ``igw_batches`` bucket;
``POST /v1/batches/{id}/cancel`` publishes on ``igw.batch.cancel.<id>``.

A batch belongs to the key that created it: a user key sees and cancels only
its own; viewers see all and admins may cancel any.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson
from nats.js.errors import KeyNotFoundError
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from schemas import subjects as s
from schemas.batch import (
    BatchEndpoint,
    BatchObject,
    BatchState,
    BatchSubmission,
    pending_key,
    state_key,
)
from services.ingress.auth import Principal
from services.ingress.body import read_json_object, validate
from services.ingress.context import IngressContext
from services.ingress.dispatch import authorize
from services.ingress.http_errors import JSON, gateway_error_response
from services.runtime.errors import (
    GatewayError,
    InvalidRequest,
    NotFound,
    ServiceUnavailable,
)

WINDOWS = ("24h",)


class CreateBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input_file_id: str = Field(min_length=1)
    endpoint: BatchEndpoint
    completion_window: str = "24h"
    metadata: dict[str, str] | None = Field(None, max_length=16)


async def create_batch(request: Request) -> Response:
    ctx: IngressContext = request.app.state.ctx
    try:
        principal = authorize(ctx, request)
        body = validate(CreateBatch, await read_json_object(request, 65536))
        if body.completion_window not in WINDOWS:
            raise InvalidRequest(
                "completion_window must be 24h", param="completion_window", code="invalid_value"
            )
        await _check_input(ctx, principal, body.input_file_id)
        batch_id = f"batch_{uuid.uuid4().hex}"
        now = int(time.time())
        placeholder = BatchState(
            batch=BatchObject(
                id=batch_id,
                endpoint=body.endpoint,
                input_file_id=body.input_file_id,
                completion_window=body.completion_window,
                created_at=now,
                expires_at=now + 86400,
                metadata=body.metadata,
            ),
            key_id=principal.token,
        )
        submission = BatchSubmission(
            batch_id=batch_id,
            key_id=principal.token,
            admin=principal.token is None,
            endpoint=body.endpoint,
            completion_window=body.completion_window,
            metadata=body.metadata,
            input_file_id=body.input_file_id,
        )
        try:
            kv = await ctx.js.key_value(s.KV_BATCHES)
            await kv.put(pending_key(batch_id), placeholder.model_dump_json().encode())
            await ctx.js.publish(
                s.BATCH_SUBMIT,
                submission.model_dump_json().encode(),
                headers={s.HEADER_MSG_ID: batch_id},
                timeout=5.0,
            )
        except Exception:
            raise ServiceUnavailable("the batch could not be queued; retry shortly") from None
    except GatewayError as exc:
        return gateway_error_response(exc)
    assert placeholder.batch is not None
    return _json(placeholder.batch.model_dump())


async def retrieve_batch(request: Request) -> Response:
    ctx: IngressContext = request.app.state.ctx
    try:
        principal = authorize(ctx, request)
        state = await _find(ctx, principal, request.path_params["batch_id"])
    except GatewayError as exc:
        return gateway_error_response(exc)
    assert state.batch is not None
    return _json(state.batch.model_dump())


async def list_batches(request: Request) -> Response:
    ctx: IngressContext = request.app.state.ctx
    try:
        principal = authorize(ctx, request)
        limit = int(request.query_params.get("limit", "20"))
        if not 1 <= limit <= 100:
            raise InvalidRequest("limit must be 1 to 100", param="limit")
        after = request.query_params.get("after")
        states = await _all(ctx)
    except ValueError:
        return gateway_error_response(InvalidRequest("limit must be a number", param="limit"))
    except GatewayError as exc:
        return gateway_error_response(exc)
    mine = [b for st in states if (b := st.batch) is not None and _may_see(principal, st)]
    mine.sort(key=lambda b: (b.created_at, b.id), reverse=True)
    if after is not None:
        ids = [b.id for b in mine]
        mine = mine[ids.index(after) + 1 :] if after in ids else []
    page = mine[:limit]
    data = [b.model_dump() for b in page]
    return _json(
        {
            "object": "list",
            "data": data,
            "first_id": page[0].id if page else None,
            "last_id": page[-1].id if page else None,
            "has_more": len(mine) > limit,
        }
    )


async def cancel_batch(request: Request) -> Response:
    ctx: IngressContext = request.app.state.ctx
    try:
        principal = authorize(ctx, request)
        batch_id = request.path_params["batch_id"]
        state = await _find(ctx, principal, batch_id)
        if principal.token != state.key_id:
            principal.require("admin")
        assert state.batch is not None
        if state.batch.status in ("validating", "in_progress"):
            try:
                await ctx.js.publish(s.batch_cancel_subject(batch_id), b"", timeout=5.0)
            except Exception:
                raise ServiceUnavailable("the cancel could not be sent; retry shortly") from None
            state.batch.status = "cancelling"
            state.batch.cancelling_at = int(time.time())
    except GatewayError as exc:
        return gateway_error_response(exc)
    return _json(state.batch.model_dump())


async def _check_input(ctx: IngressContext, principal: Principal, file_id: str) -> None:
    if ctx.files is None:
        raise ServiceUnavailable("the file store is not available")
    stored = await ctx.files.info(file_id)
    visible = stored is not None and (
        stored.owner == principal.token or principal.at_least("viewer")
    )
    if stored is None or not visible:
        raise NotFound(f"no file {file_id!r}", param="input_file_id", code="file_not_found")
    if stored.file.purpose != "batch":
        raise InvalidRequest(
            f"file {file_id!r} was not uploaded with purpose=batch", param="input_file_id"
        )


async def _find(ctx: IngressContext, principal: Principal, batch_id: str) -> BatchState:
    kv = await ctx.js.key_value(s.KV_BATCHES)
    for key in (state_key(batch_id), pending_key(batch_id)):
        try:
            entry = await kv.get(key)
        except KeyNotFoundError:
            continue
        except Exception:
            raise ServiceUnavailable("the batch store is not available") from None
        try:
            state = BatchState.model_validate_json(entry.value or b"")
        except ValidationError:
            continue
        if state.batch is not None and _may_see(principal, state):
            return state
    raise NotFound(f"no batch {batch_id!r}", param="batch_id", code="batch_not_found")


async def _all(ctx: IngressContext) -> list[BatchState]:
    kv = await ctx.js.key_value(s.KV_BATCHES)
    try:
        keys = await kv.keys()
    except Exception:  # nats-py raises when the bucket holds nothing
        return []
    taken = {k.removeprefix("batch.") for k in keys if k.startswith("batch.")}
    out: list[BatchState] = []
    for key in keys:
        if key.startswith("pending.") and key.removeprefix("pending.") in taken:
            continue
        try:
            entry = await kv.get(key)
            out.append(BatchState.model_validate_json(entry.value or b""))
        except (KeyNotFoundError, ValidationError):
            continue
    return out


def _may_see(principal: Principal, state: BatchState) -> bool:
    return state.key_id == principal.token or principal.at_least("viewer")


def _json(data: Any) -> Response:
    return Response(orjson.dumps(data), media_type=JSON)
