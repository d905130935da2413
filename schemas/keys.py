"""Virtual keys: the admin API's bodies (LiteLLM's shapes, seed 000) and the
record stored in the ``igw_keys`` KV bucket under the key's hash.

A key itself (``sk-igw-...``) is shown once, when generated; the gateway keeps
only its keyed hash (HMAC-SHA-256 with a server secret), which is also the
key's id (``token``) in the admin API.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Role = Literal["admin", "viewer", "user"]
ROLE_RANK: dict[str, int] = {"user": 0, "viewer": 1, "admin": 2}
KEY_PREFIX = "sk-igw-"


class KeyRecord(BaseModel):
    model_config = ConfigDict(extra="ignore")

    schema_version: int = 1
    token: str = Field(description="the key's hash: its id")
    key_alias: str | None = None
    role: Role = "user"
    models: list[str] = Field(default_factory=list, description="allowed aliases; empty: all")
    user_id: str | None = None
    team_id: str | None = None
    max_budget: float | None = None
    budget_duration: str | None = None
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    max_parallel_requests: int | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: float
    expires: float | None = Field(None, description="epoch seconds; None: never")
    created_by: str | None = Field(None, description="token of the key that minted it")
    blocked: bool = False


class GenerateKeyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: list[str] | None = None
    duration: str | None = Field(None, description="for example 30m, 12h, 7d; None: never")
    key_alias: str | None = Field(None, max_length=256)
    role: Role = "user"
    user_id: str | None = None
    team_id: str | None = None
    max_budget: float | None = Field(None, ge=0)
    budget_duration: str | None = None
    rpm_limit: int | None = Field(None, ge=1)
    tpm_limit: int | None = Field(None, ge=1)
    max_parallel_requests: int | None = Field(None, ge=1)
    metadata: dict[str, Any] | None = None


class UpdateKeyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str = Field(description="the key, or its token")
    models: list[str] | None = None
    duration: str | None = None
    key_alias: str | None = None
    max_budget: float | None = Field(None, ge=0)
    budget_duration: str | None = None
    rpm_limit: int | None = Field(None, ge=1)
    tpm_limit: int | None = Field(None, ge=1)
    max_parallel_requests: int | None = Field(None, ge=1)
    metadata: dict[str, Any] | None = None
    blocked: bool | None = None


class DeleteKeysRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keys: list[str] = Field(min_length=1, description="keys, or their tokens")


class UserRecord(BaseModel):
    """A user (``igw_keys`` bucket, key ``user.<user_id>``)."""

    model_config = ConfigDict(extra="ignore")

    schema_version: int = 1
    user_id: str
    user_email: str | None = None
    user_role: Role = "user"
    team_id: str | None = None
    max_budget: float | None = None
    budget_duration: str | None = None
    models: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: float


class TeamRecord(BaseModel):
    """A team (``igw_keys`` bucket, key ``team.<team_id>``)."""

    model_config = ConfigDict(extra="ignore")

    schema_version: int = 1
    team_id: str
    team_alias: str | None = None
    max_budget: float | None = None
    budget_duration: str | None = None
    models: list[str] = Field(default_factory=list)
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: float


class NewUserRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: str | None = Field(None, pattern=r"^[A-Za-z0-9_.@+-]{1,128}$")
    user_email: str | None = Field(None, max_length=256)
    user_role: Role = "user"
    team_id: str | None = None
    max_budget: float | None = Field(None, ge=0)
    budget_duration: str | None = None
    models: list[str] | None = None
    metadata: dict[str, Any] | None = None


class NewTeamRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    team_id: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]{1,128}$")
    team_alias: str | None = Field(None, max_length=256)
    max_budget: float | None = Field(None, ge=0)
    budget_duration: str | None = None
    models: list[str] | None = None
    rpm_limit: int | None = Field(None, ge=1)
    tpm_limit: int | None = Field(None, ge=1)
    metadata: dict[str, Any] | None = None
