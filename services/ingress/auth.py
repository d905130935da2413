"""Who is calling: the master key, a virtual key, or nobody (an open gateway).

Keys arrive as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. The
master key is compared in constant time; a virtual key is looked up by its
keyed hash (HMAC-SHA-256 with the server secret), so the gateway never stores
or logs a key. Each ingress keeps every key record in memory and follows the
``igw_keys`` KV bucket, so a revoked or changed key takes effect on every
replica as soon as the bucket's update arrives.

With no master key configured the gateway is open: every caller is an admin.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from dataclasses import dataclass, field

from nats.js.kv import KeyValue
from pydantic import ValidationError
from starlette.datastructures import Headers

from schemas.keys import KeyRecord, TeamRecord, UserRecord
from services.runtime.errors import AuthenticationFailed
from services.runtime.keyhash import hasher, key_hash
from services.runtime.principal import OPEN, Principal

__all__ = ["OPEN", "KeyStore", "Principal", "presented_key"]
from services.runtime.settings import AuthSettings

log = logging.getLogger("igw.ingress.auth")


def presented_key(headers: Headers) -> str | None:
    value = headers.get("authorization")
    if value:
        scheme, _, token = value.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    key = headers.get("x-api-key")
    return key.strip() if key else None


@dataclass
class KeyStore:
    settings: AuthSettings
    records: dict[str, KeyRecord] = field(default_factory=dict)
    users: dict[str, UserRecord] = field(default_factory=dict)
    teams: dict[str, TeamRecord] = field(default_factory=dict)
    kv: KeyValue | None = None
    _watcher: asyncio.Task[None] | None = None

    @property
    def open(self) -> bool:
        return self.settings.master_key is None

    @property
    def secret(self) -> bytes:
        return hasher(self.settings)

    async def start(self, kv: KeyValue) -> None:
        self.kv = kv
        loaded = asyncio.Event()
        watch = await kv.watchall()

        async def follow() -> None:
            async for entry in watch:
                if entry is None:  # the initial values are all in
                    loaded.set()
                    continue
                self._apply(entry.key, None if entry.operation in ("DEL", "PURGE") else entry.value)

        self._watcher = asyncio.create_task(follow())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(loaded.wait(), 10.0)

    def _apply(self, key: str, value: bytes | None) -> None:
        """One bucket entry: ``user.<id>``, ``team.<id>``, or a key's token."""
        kind, _, name = key.partition(".")
        with contextlib.suppress(ValidationError):
            if kind == "user" and name:
                if value:
                    self.users[name] = UserRecord.model_validate_json(value)
                else:
                    self.users.pop(name, None)
            elif kind == "team" and name:
                if value:
                    self.teams[name] = TeamRecord.model_validate_json(value)
                else:
                    self.teams.pop(name, None)
            elif value:
                self.records[key] = KeyRecord.model_validate_json(value)
            else:
                self.records.pop(key, None)

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()

    def authenticate(self, headers: Headers) -> Principal:
        if self.open:
            return OPEN
        key = presented_key(headers)
        if key is None:
            raise AuthenticationFailed(
                "missing API key: send it as 'Authorization: Bearer <key>' or 'X-API-Key'",
                code="missing_api_key",
            )
        master = self.settings.master_key
        if master is not None and hmac.compare_digest(
            key.encode(), master.get_secret_value().encode()
        ):
            return Principal(role="admin")
        token = key_hash(self.secret, key)
        record = self.records.get(token)
        if record is None or not hmac.compare_digest(record.token, token):
            raise AuthenticationFailed("invalid API key")
        if record.blocked:
            raise AuthenticationFailed("this API key was revoked", code="key_revoked")
        if record.expires is not None and record.expires <= time.time():
            raise AuthenticationFailed("this API key has expired", code="key_expired")
        return Principal(
            role=record.role,
            token=record.token,
            models=tuple(record.models),
            user_id=record.user_id,
            team_id=record.team_id,
            record=record,
        )
