"""The key admin API, in LiteLLM's paths and shapes (seed 000).

``POST /key/generate``, ``GET /key/info?key=``, ``POST /key/update``,
``POST /key/delete``, ``GET /key/list``. Admins may do everything; viewers may
read; users may read their own key and mint keys with at most their own
rights (role, models, budget, limits, expiry). A key is shown once, when
generated; afterwards it is named by its ``token`` (its keyed hash).
"""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from schemas.keys import (
    KEY_PREFIX,
    ROLE_RANK,
    DeleteKeysRequest,
    GenerateKeyRequest,
    KeyRecord,
    UpdateKeyRequest,
)
from services.ingress.auth import KeyStore, Principal
from services.ingress.body import read_json_object, validate
from services.ingress.context import IngressContext
from services.ingress.http_errors import JSON, gateway_error_response
from services.runtime.durations import duration_s
from services.runtime.errors import GatewayError, InvalidRequest, NotFound, PermissionDenied
from services.runtime.keyhash import key_hash


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


def _public(record: KeyRecord) -> dict[str, Any]:
    out = record.model_dump(exclude={"schema_version"})
    out["expires"] = _iso(record.expires)
    out["spend"] = 0.0
    return out


async def _with_spend(ctx: IngressContext, record: KeyRecord) -> dict[str, Any]:
    out = _public(record)
    if ctx.admission is not None:
        out.update(await ctx.admission.spend_of("key", record.token))
    return out


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type=JSON)


def _ctx(request: Request) -> tuple[IngressContext, KeyStore]:
    ctx: IngressContext = request.app.state.ctx
    assert ctx.keys is not None
    return ctx, ctx.keys


def _find(keys: KeyStore, key_or_token: str) -> KeyRecord:
    token = key_or_token
    if key_or_token.startswith(KEY_PREFIX):
        token = key_hash(keys.secret, key_or_token)
    record = keys.records.get(token)
    if record is None:
        raise NotFound("no such key", param="key", code="key_not_found")
    return record


def _check_subset(caller: Principal, wanted: GenerateKeyRequest, expires: float | None) -> None:
    """A non-admin may only mint keys with at most its own rights."""
    if caller.role == "admin":
        return
    if caller.role == "viewer":
        raise PermissionDenied("a viewer key may not create keys", code="insufficient_role")
    own = caller.record
    if ROLE_RANK[wanted.role] > ROLE_RANK[caller.role]:
        raise PermissionDenied("a key may not mint a more powerful key", param="role")
    if caller.models and (not wanted.models or not set(wanted.models) <= set(caller.models)):
        raise PermissionDenied("a key may only grant models it has itself", param="models")
    if own is not None:
        for name in ("max_budget", "rpm_limit", "tpm_limit", "max_parallel_requests"):
            mine, theirs = getattr(own, name), getattr(wanted, name)
            if mine is not None and (theirs is None or theirs > mine):
                raise PermissionDenied(f"'{name}' may not exceed this key's own", param=name)
        if own.expires is not None and (expires is None or expires > own.expires):
            raise PermissionDenied("the new key may not outlive this one", param="duration")
        if wanted.user_id not in (None, own.user_id) or wanted.team_id not in (None, own.team_id):
            raise PermissionDenied("a key may only mint keys for its own user and team")


async def generate_key(request: Request) -> Response:
    ctx, keys = _ctx(request)
    try:
        caller = keys.authenticate(request.headers)
        body = validate(GenerateKeyRequest, await read_json_object(request, 65536))
        now = time.time()
        expires = now + duration_s(body.duration, "duration") if body.duration else None
        _check_subset(caller, body, expires)
        unknown = [m for m in body.models or () if m not in ctx.aliases and m != "auto"]
        if unknown:
            raise InvalidRequest(f"unknown model {unknown[0]!r}", param="models")
        if body.budget_duration:
            duration_s(body.budget_duration, "budget_duration")
        if body.user_id is not None and body.user_id not in keys.users:
            raise NotFound(f"no user {body.user_id!r}", param="user_id")
        if body.team_id is not None and body.team_id not in keys.teams:
            raise NotFound(f"no team {body.team_id!r}", param="team_id")
        user = keys.users.get(body.user_id) if body.user_id else None
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        own = caller.record
        record = KeyRecord(
            token=key_hash(keys.secret, key),
            key_alias=body.key_alias,
            role=body.role,
            models=body.models or list(caller.models),
            user_id=body.user_id or (own.user_id if own else None),
            team_id=body.team_id
            or (user.team_id if user else None)
            or (own.team_id if own else None),
            max_budget=body.max_budget,
            budget_duration=body.budget_duration,
            rpm_limit=body.rpm_limit,
            tpm_limit=body.tpm_limit,
            max_parallel_requests=body.max_parallel_requests,
            metadata=body.metadata or {},
            created_at=now,
            expires=expires,
            created_by=caller.token,
        )
        await _store(keys, record)
    except GatewayError as exc:
        return gateway_error_response(exc)
    return _json({"key": key, "key_name": f"{key[:10]}...{key[-4:]}", **_public(record)})


async def key_info(request: Request) -> Response:
    ctx, keys = _ctx(request)
    try:
        caller = keys.authenticate(request.headers)
        wanted = request.query_params.get("key")
        if wanted is None:
            if caller.record is None:
                raise InvalidRequest("name the key: /key/info?key=...", param="key")
            record = caller.record
        else:
            record = _find(keys, wanted)
        if record.token != caller.token:
            caller.require("viewer")
    except GatewayError as exc:
        return gateway_error_response(exc)
    return _json({"key": record.token, "info": await _with_spend(ctx, record)})


async def update_key(request: Request) -> Response:
    _, keys = _ctx(request)
    try:
        keys.authenticate(request.headers).require("admin")
        body = validate(UpdateKeyRequest, await read_json_object(request, 65536))
        record = _find(keys, body.key)
        changes = body.model_dump(exclude_unset=True, exclude={"key", "duration"})
        if body.duration is not None:
            changes["expires"] = time.time() + duration_s(body.duration, "duration")
        record = record.model_copy(update=changes)
        await _store(keys, record)
    except GatewayError as exc:
        return gateway_error_response(exc)
    return _json({"key": record.token, "info": _public(record)})


async def delete_keys(request: Request) -> Response:
    _, keys = _ctx(request)
    try:
        keys.authenticate(request.headers).require("admin")
        body = validate(DeleteKeysRequest, await read_json_object(request, 65536))
        records = [_find(keys, k) for k in body.keys]
        assert keys.kv is not None
        for record in records:
            await keys.kv.delete(record.token)
            keys.records.pop(record.token, None)
    except GatewayError as exc:
        return gateway_error_response(exc)
    return _json({"deleted_keys": [r.token for r in records]})


async def list_keys(request: Request) -> Response:
    _, keys = _ctx(request)
    try:
        keys.authenticate(request.headers).require("viewer")
    except GatewayError as exc:
        return gateway_error_response(exc)
    return _json({"keys": sorted(keys.records)})


async def _store(keys: KeyStore, record: KeyRecord) -> None:
    assert keys.kv is not None
    await keys.kv.put(record.token, record.model_dump_json().encode())
    keys.records[record.token] = record  # this replica sees it at once; others via the watch
