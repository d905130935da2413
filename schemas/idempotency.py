"""The record behind an ``Idempotency-Key``, stored in the ``igw_idempotency`` KV
bucket under a hash of the caller and the key (never the key itself).

A record is ``in_flight`` while the original request runs and ``done`` once it
answered successfully; then it holds the answer exactly as the client received
it (a JSON body, or the whole Server-Sent Events text of a stream), so a repeat
is answered from here and never reaches a provider. A failed original leaves
no record.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

State = Literal["in_flight", "done"]


class IdempotencyRecord(BaseModel):
    model_config = ConfigDict(
        extra="ignore", frozen=True, ser_json_bytes="base64", val_json_bytes="base64"
    )

    schema_version: int = 1
    state: State
    body_hash: str = Field(description="SHA-256 of the canonical JSON request body")
    request_id: str = Field(description="the original request's id")
    deadline: float = Field(description="epoch seconds by which the original must have answered")
    status: int | None = Field(None, description="HTTP status of the stored answer")
    media_type: str | None = None
    body: bytes = Field(b"", description="the answer's bytes (base64 in JSON)")
    headers: dict[str, str] = Field(
        default_factory=dict, description="headers replayed with the answer"
    )

    def finished(
        self, status: int, media_type: str, body: bytes, headers: dict[str, str]
    ) -> IdempotencyRecord:
        return self.model_copy(
            update={
                "state": "done",
                "status": status,
                "media_type": media_type,
                "body": body,
                "headers": headers,
            }
        )
