"""Users and teams, in LiteLLM's paths and shapes (seed 000).

``POST /user/new``, ``GET /user/info?user_id=``, ``POST /team/new``,
``GET /team/info?team_id=``. Admins create; viewers read anything; a user key
reads its own user and team. ``/user/info`` lists the user's keys (by token)
and ``/team/info`` the team's keys and members.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from schemas.keys import NewTeamRequest, NewUserRequest, TeamRecord, UserRecord
from schemas.limits import Holder
from services.ingress.auth import KeyStore, Principal
from services.ingress.body import read_json_object, validate
from services.ingress.context import IngressContext
from services.ingress.http_errors import JSON, gateway_error_response
from services.runtime.durations import duration_s
from services.runtime.errors import GatewayError, InvalidRequest, NotFound


def _json(data: Any) -> Response:
    return Response(orjson.dumps(data), media_type=JSON)


def _store_of(request: Request) -> tuple[IngressContext, KeyStore]:
    ctx: IngressContext = request.app.state.ctx
    assert ctx.keys is not None
    return ctx, ctx.keys


def _check_models(ctx: IngressContext, models: list[str] | None) -> None:
    unknown = [m for m in models or () if m not in ctx.aliases and m != "auto"]
    if unknown:
        raise InvalidRequest(f"unknown model {unknown[0]!r}", param="models")


def _may_read(caller: Principal, user_id: str | None = None, team_id: str | None = None) -> None:
    own = (user_id is not None and user_id == caller.user_id) or (
        team_id is not None and team_id == caller.team_id
    )
    if not own:
        caller.require("viewer")


async def new_user(request: Request) -> Response:
    ctx, keys = _store_of(request)
    try:
        keys.authenticate(request.headers).require("admin")
        body = validate(NewUserRequest, await read_json_object(request, 65536))
        _check_models(ctx, body.models)
        if body.budget_duration:
            duration_s(body.budget_duration, "budget_duration")
        if body.team_id is not None and body.team_id not in keys.teams:
            raise NotFound(f"no team {body.team_id!r}", param="team_id")
        user_id = body.user_id or f"user_{secrets.token_hex(8)}"
        if user_id in keys.users:
            raise InvalidRequest(f"user {user_id!r} exists", param="user_id", code="exists")
        record = UserRecord(
            user_id=user_id,
            user_email=body.user_email,
            user_role=body.user_role,
            team_id=body.team_id,
            max_budget=body.max_budget,
            budget_duration=body.budget_duration,
            models=body.models or [],
            metadata=body.metadata or {},
            created_at=time.time(),
        )
        await _put(keys, f"user.{user_id}", record.model_dump_json().encode())
        keys.users[user_id] = record
    except GatewayError as exc:
        return gateway_error_response(exc)
    return _json({**record.model_dump(exclude={"schema_version"}), "spend": 0.0})


async def user_info(request: Request) -> Response:
    ctx, keys = _store_of(request)
    try:
        caller = keys.authenticate(request.headers)
        user_id = request.query_params.get("user_id") or caller.user_id
        if user_id is None:
            raise InvalidRequest("name the user: /user/info?user_id=...", param="user_id")
        _may_read(caller, user_id=user_id)
        record = keys.users.get(user_id)
        if record is None:
            raise NotFound(f"no user {user_id!r}", param="user_id")
    except GatewayError as exc:
        return gateway_error_response(exc)
    tokens = sorted(t for t, k in keys.records.items() if k.user_id == user_id)
    info = {**record.model_dump(exclude={"schema_version"}), **await _spend(ctx, "user", user_id)}
    return _json({"user_id": user_id, "user_info": info, "keys": tokens})


async def new_team(request: Request) -> Response:
    ctx, keys = _store_of(request)
    try:
        keys.authenticate(request.headers).require("admin")
        body = validate(NewTeamRequest, await read_json_object(request, 65536))
        _check_models(ctx, body.models)
        if body.budget_duration:
            duration_s(body.budget_duration, "budget_duration")
        team_id = body.team_id or f"team_{secrets.token_hex(8)}"
        if team_id in keys.teams:
            raise InvalidRequest(f"team {team_id!r} exists", param="team_id", code="exists")
        record = TeamRecord(
            team_id=team_id,
            team_alias=body.team_alias,
            max_budget=body.max_budget,
            budget_duration=body.budget_duration,
            models=body.models or [],
            rpm_limit=body.rpm_limit,
            tpm_limit=body.tpm_limit,
            metadata=body.metadata or {},
            created_at=time.time(),
        )
        await _put(keys, f"team.{team_id}", record.model_dump_json().encode())
        keys.teams[team_id] = record
    except GatewayError as exc:
        return gateway_error_response(exc)
    return _json({**record.model_dump(exclude={"schema_version"}), "spend": 0.0})


async def team_info(request: Request) -> Response:
    ctx, keys = _store_of(request)
    try:
        caller = keys.authenticate(request.headers)
        team_id = request.query_params.get("team_id") or caller.team_id
        if team_id is None:
            raise InvalidRequest("name the team: /team/info?team_id=...", param="team_id")
        _may_read(caller, team_id=team_id)
        record = keys.teams.get(team_id)
        if record is None:
            raise NotFound(f"no team {team_id!r}", param="team_id")
    except GatewayError as exc:
        return gateway_error_response(exc)
    members = sorted(u for u, r in keys.users.items() if r.team_id == team_id)
    tokens = sorted(t for t, k in keys.records.items() if k.team_id == team_id)
    info = {**record.model_dump(exclude={"schema_version"}), **await _spend(ctx, "team", team_id)}
    return _json({"team_id": team_id, "team_info": info, "members": members, "keys": tokens})


async def _spend(ctx: IngressContext, holder: Holder, ident: str) -> dict[str, Any]:
    if ctx.admission is None:
        return {"spend": 0.0}
    return await ctx.admission.spend_of(holder, ident)


async def _put(keys: KeyStore, key: str, value: bytes) -> None:
    assert keys.kv is not None
    await keys.kv.put(key, value)
