"""``/v1/files``: OpenAI's Files API over the ``igw_files`` object store.

``POST /v1/files`` (multipart: ``file`` and ``purpose``), ``GET /v1/files``
(``purpose``, ``limit``, ``after``, ``order``), ``GET /v1/files/{file_id}``,
``GET /v1/files/{file_id}/content`` and ``DELETE /v1/files/{file_id}``.

A file belongs to the key that uploaded it. A user key sees and deletes only
its own files (another's is a 404, as if it did not exist); viewers see every
file and admins may also delete any. A file uploaded with the master key (or
on an open gateway) has no owner, so only viewers and admins see it. A
``batch`` file is checked as batch input (:mod:`services.runtime.batch_input`)
before it is stored; other purposes are stored as they are.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import IO

from pydantic import BaseModel
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from schemas.files import FILE_ID, UPLOAD_PURPOSES, FileDeleted, FileList, Purpose
from services.ingress.auth import Principal
from services.ingress.context import IngressContext
from services.ingress.dispatch import authorize, check_model
from services.ingress.http_errors import JSON, gateway_error_response
from services.ingress.uploads import drain, read_form
from services.runtime.batch_input import check_batch_input
from services.runtime.errors import (
    GatewayError,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    ServiceUnavailable,
)
from services.runtime.file_store import FileStore, StoredFile

READ_CHUNK = 64 * 1024
MAX_LIST = 10_000


async def create_file(request: Request) -> Response:
    ctx: IngressContext = request.app.state.ctx
    form: FormData | None = None
    try:
        principal = authorize(ctx, request)
        store = _store(ctx)
        limit = ctx.settings.batch.max_file_bytes
        try:
            form = await read_form(request, limit)
        except PayloadTooLarge:
            await drain(request)
            raise
        upload, purpose = _upload_fields(form)
        if upload.size is not None and upload.size > limit:
            raise PayloadTooLarge(f"the file is larger than the limit of {limit} bytes")
        if purpose == "batch":
            await _check_batch(ctx, principal, upload.file)
            await upload.seek(0)
        stored = await store.put(
            f"file-{uuid.uuid4().hex}",
            upload.file,
            filename=_basename(upload.filename),
            purpose=purpose,
            owner=principal.token,
        )
    except GatewayError as exc:
        return gateway_error_response(exc)
    finally:
        if form is not None:
            await form.close()
    return _json(stored.file)


async def list_files(request: Request) -> Response:
    ctx: IngressContext = request.app.state.ctx
    params = request.query_params
    try:
        principal = authorize(ctx, request)
        limit = _limit(params.get("limit"))
        order = params.get("order", "desc")
        if order not in ("asc", "desc"):
            raise InvalidRequest("order must be 'asc' or 'desc'", param="order")
        purpose, after = params.get("purpose"), params.get("after")
        files = [
            s
            for s in await _store(ctx).all()
            if _may_read(principal, s) and (purpose is None or s.file.purpose == purpose)
        ]
        files.sort(key=lambda s: (s.created, s.file.id), reverse=order == "desc")
        if after is not None:
            ids = [s.file.id for s in files]
            if after not in ids:
                raise InvalidRequest(f"no file {after!r} to list after", param="after")
            files = files[ids.index(after) + 1 :]
    except GatewayError as exc:
        return gateway_error_response(exc)
    page = [s.file for s in files[:limit]]
    return _json(
        FileList(
            data=page,
            first_id=page[0].id if page else None,
            last_id=page[-1].id if page else None,
            has_more=len(files) > limit,
        )
    )


async def retrieve_file(request: Request) -> Response:
    ctx: IngressContext = request.app.state.ctx
    try:
        stored = await _find(ctx, request, authorize(ctx, request))
    except GatewayError as exc:
        return gateway_error_response(exc)
    return _json(stored.file)


async def file_content(request: Request) -> Response:
    ctx: IngressContext = request.app.state.ctx
    try:
        stored = await _find(ctx, request, authorize(ctx, request))
        found = await _store(ctx).download(stored.file.id)
        if found is None:  # deleted in between
            raise _not_found(stored.file.id)
    except GatewayError as exc:
        return gateway_error_response(exc)
    stored, content = found
    headers = {"content-length": str(stored.file.bytes)}
    return StreamingResponse(
        _chunks(content), media_type="application/octet-stream", headers=headers
    )


async def delete_file(request: Request) -> Response:
    ctx: IngressContext = request.app.state.ctx
    try:
        principal = authorize(ctx, request)
        stored = await _find(ctx, request, principal)
        if not (principal.at_least("admin") or _owns(principal, stored)):
            raise PermissionDenied(
                "only an admin may delete another key's file", code="insufficient_role"
            )
        if not await _store(ctx).delete(stored.file.id):
            raise _not_found(stored.file.id)
    except GatewayError as exc:
        return gateway_error_response(exc)
    return _json(FileDeleted(id=stored.file.id))


async def _check_batch(ctx: IngressContext, principal: Principal, content: IO[bytes]) -> None:
    """Raises ``BatchInputError`` naming the first bad line; runs in a worker thread."""

    def allowed(model: str) -> None:
        check_model(ctx, model, principal)

    await asyncio.to_thread(
        check_batch_input,
        content,
        max_items=ctx.settings.batch.max_items,
        max_line_bytes=ctx.settings.server.max_body_bytes,
        check_model=allowed,
    )


def _upload_fields(form: FormData) -> tuple[UploadFile, Purpose]:
    upload, purpose = form.get("file"), form.get("purpose")
    if upload is None:
        raise _missing("file")
    if not isinstance(upload, UploadFile):
        raise InvalidRequest(
            "'file' must be a file part (with a filename)", param="file", code="invalid_value"
        )
    if purpose is None:
        raise _missing("purpose")
    for known in UPLOAD_PURPOSES:
        if purpose == known:
            return upload, known
    raise InvalidRequest(
        f"purpose must be one of {', '.join(UPLOAD_PURPOSES)}",
        param="purpose",
        code="invalid_value",
    )


async def _find(ctx: IngressContext, request: Request, principal: Principal) -> StoredFile:
    """The file named in the path, if this caller may see it (else a 404)."""
    file_id = str(request.path_params["file_id"])
    stored = await _store(ctx).info(file_id) if FILE_ID.match(file_id) else None
    if stored is None or not _may_read(principal, stored):
        raise _not_found(file_id)
    return stored


def _may_read(principal: Principal, stored: StoredFile) -> bool:
    return principal.at_least("viewer") or _owns(principal, stored)


def _owns(principal: Principal, stored: StoredFile) -> bool:
    return principal.token is not None and stored.owner == principal.token


def _limit(value: str | None) -> int:
    if value is None:
        return MAX_LIST
    if not value.isdigit() or not 1 <= int(value) <= MAX_LIST:
        raise InvalidRequest(f"limit must be an integer from 1 to {MAX_LIST}", param="limit")
    return int(value)


def _basename(filename: str | None) -> str:
    name = (filename or "").replace("\\", "/").rsplit("/", 1)[-1].strip()
    return name[:255] or "file"


def _store(ctx: IngressContext) -> FileStore:
    if ctx.files is None:
        raise ServiceUnavailable("the file store is not available on this ingress")
    return ctx.files


def _missing(param: str) -> InvalidRequest:
    return InvalidRequest(
        f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter"
    )


def _not_found(file_id: str) -> NotFound:
    return NotFound(f"No such File object: {file_id}", param="file_id", code="file_not_found")


def _json(model: BaseModel) -> Response:
    return Response(model.model_dump_json(), media_type=JSON)


async def _chunks(content: IO[bytes]) -> AsyncIterator[bytes]:
    """The downloaded file in pieces; closes it at the end or when the client leaves."""
    try:
        while chunk := await asyncio.to_thread(content.read, READ_CHUNK):
            yield chunk
    finally:
        content.close()
