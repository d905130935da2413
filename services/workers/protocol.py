"""The seam every provider adapter implements.

An adapter turns one normalized call into its provider's wire format and back.
The normalized shapes are OpenAI's: ``complete`` returns a ``chat.completion``
object, ``stream`` yields ``chat.completion.chunk`` objects. Adapters raise
only ``services.runtime.errors.GatewayError`` subclasses; transport and
provider errors are translated inside the adapter.

``embed`` takes an OpenAI embeddings body and returns an OpenAI embeddings
list object (``Completion.response``, usage in ``Completion.usage``); a provider
without embeddings raises ``InvalidRequest``.

Who closes what: ``stream`` is an async generator; the caller either exhausts
it or closes it (``aclose``, or cancellation), and the adapter then closes the
upstream connection.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from schemas.openai_chat import Usage
from services.runtime.settings import ModelDeployment


@dataclass(frozen=True, slots=True)
class UpstreamCall:
    deployment: ModelDeployment
    body: dict[str, Any]
    stream: bool
    timeout_s: float


@dataclass(frozen=True, slots=True)
class Completion:
    """A whole ``chat.completion``; ``raw`` is its JSON when the wire already had it."""

    response: dict[str, Any]
    usage: Usage | None
    finish_reason: str | None
    raw: bytes | None = None


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """One ``chat.completion.chunk``; ``raw`` is its JSON when the wire already had it."""

    chunk: dict[str, Any]
    usage: Usage | None = None
    finish_reason: str | None = None
    has_output: bool = False
    raw: bytes | None = None


class ProviderAdapter(Protocol):
    name: ClassVar[str]

    async def complete(self, call: UpstreamCall) -> Completion: ...

    def stream(self, call: UpstreamCall) -> AsyncGenerator[StreamEvent, None]: ...

    async def embed(self, call: UpstreamCall) -> Completion: ...
