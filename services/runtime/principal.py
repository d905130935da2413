"""Who is calling: a key's role, rights and owner, as every service sees it."""

from __future__ import annotations

from dataclasses import dataclass

from schemas.keys import ROLE_RANK, KeyRecord, Role
from services.runtime.errors import PermissionDenied


@dataclass(frozen=True, slots=True)
class Principal:
    role: Role
    token: str | None = None
    """The key's hash (its id); None for the master key and an open gateway."""
    models: tuple[str, ...] = ()
    user_id: str | None = None
    team_id: str | None = None
    record: KeyRecord | None = None

    def at_least(self, role: Role) -> bool:
        return ROLE_RANK[self.role] >= ROLE_RANK[role]

    def require(self, role: Role) -> None:
        if not self.at_least(role):
            raise PermissionDenied(f"this needs a {role} key", code="insufficient_role")

    def allow_model(self, model: str) -> None:
        if self.models and model not in self.models:
            raise PermissionDenied(
                f"this key may not use model `{model}`", param="model", code="model_not_allowed"
            )


OPEN = Principal(role="admin")
