"""The users and teams a batch's key belongs to, read from ``igw_keys`` (the
ingress follows the whole bucket; the batch service needs only these)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from nats.js.kv import KeyValue
from pydantic import ValidationError

from schemas.keys import KeyRecord, TeamRecord, UserRecord


@dataclass
class People:
    users: dict[str, UserRecord] = field(default_factory=dict)
    teams: dict[str, TeamRecord] = field(default_factory=dict)

    async def load(self, keys: KeyValue, record: KeyRecord) -> None:
        """Refresh the user and team of ``record`` (their budgets may have changed)."""
        if record.user_id:
            with contextlib.suppress(Exception, ValidationError):
                entry = await keys.get(f"user.{record.user_id}")
                self.users[record.user_id] = UserRecord.model_validate_json(entry.value or b"")
        if record.team_id:
            with contextlib.suppress(Exception, ValidationError):
                entry = await keys.get(f"team.{record.team_id}")
                self.teams[record.team_id] = TeamRecord.model_validate_json(entry.value or b"")
