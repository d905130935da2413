"""The seam between the simulator's engine and each provider's wire format.

A dialect parses one provider's request into a :class:`SimRequest` (the parts the
engine acts on, plus the conversation as :class:`Item` s so that ``echo=1`` can
show what the simulator understood), and renders the engine's :class:`Answer`,
stream and errors back in that provider's format. The engine
(:mod:`services.simulator.engine`) decides *what* to answer (text, tool call,
finish reason, token counts, faults); a dialect decides only *how it looks on
the wire*.

Contracts:

* ``parse_chat`` raises :class:`SimError` for anything the real provider would
  reject (missing auth header, missing required field, wrong type); the app
  renders it with ``error``.
* ``stream_encoder`` returns a fresh, stateful encoder per response. The app calls
  ``start`` once, then ``text`` per token *or* ``tool_start`` once followed by
  ``tool_arguments`` per fragment, then ``finish`` once. Each call returns the
  bytes to send (possibly empty). ``malformed`` returns one broken frame.
* ``error`` maps a :class:`SimError` kind to the provider's status, headers and
  body; it may change the status (a provider without 529 answers 503, say).
* Embeddings (``parse_embed``/``embed_response``) are optional: a dialect without
  them has ``embeds = False`` and those methods raise ``SimError`` 404.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Operation = Literal["chat", "stream", "embed", "models"]
"""``chat``: the request body's own stream flag decides; ``stream``: the path says stream."""

ErrorKind = Literal[
    "invalid_request",
    "authentication",
    "permission",
    "not_found",
    "request_too_large",
    "rate_limit",
    "api_error",
    "unavailable",
    "overloaded",
]

FAULT_KINDS: dict[str, ErrorKind] = {
    "400": "invalid_request",
    "401": "authentication",
    "403": "permission",
    "404": "not_found",
    "413": "request_too_large",
    "429": "rate_limit",
    "500": "api_error",
    "503": "unavailable",
    "529": "overloaded",
}
"""Error faults (``fault=<code>``) and the error kind each injects."""


class SimError(Exception):
    """A request the simulated provider refuses; rendered by the dialect's ``error``."""

    def __init__(
        self,
        status: int,
        message: str,
        kind: ErrorKind = "invalid_request",
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.param = param
        self.code = code
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class Item:
    """One piece of the conversation as the simulator understood it.

    ``kind``: ``system``/``user``/``assistant`` (text), ``image`` (``text`` is the
    media type, or ``url`` for a by-reference image), ``call`` (``text`` is
    ``name(arguments-json)`` with keys sorted), ``result`` (a tool result's text).
    """

    kind: Literal["system", "user", "assistant", "image", "call", "result"]
    text: str


@dataclass(frozen=True, slots=True)
class SimTool:
    name: str
    parameters: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class SimRequest:
    """The parts of a chat request the engine acts on, whatever the dialect."""

    model: str
    """The model name as sent; text after ``?`` is the behaviour (see ``behaviour``)."""
    stream: bool = False
    include_usage: bool = True
    """OpenAI streams carry usage only on request; other dialects always do."""
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    tools: tuple[SimTool, ...] = ()
    tool_choice: str | None = None
    """``None``/``auto``: the model decides (never, unless forced); ``none``; ``required``
    (any tool); or a function name."""
    items: tuple[Item, ...] = ()
    header_behaviour: str | None = None
    """The ``X-Sim-Behavior`` header, when sent."""
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Dialect-specific values the dialect wants back when rendering (ids, versions)."""


@dataclass(frozen=True, slots=True)
class SimToolCall:
    id: str
    name: str
    arguments: str
    """JSON text of the arguments object."""


@dataclass(frozen=True, slots=True)
class Answer:
    """What the engine decided to answer. Exactly one of ``pieces``/``tool_call`` is used:
    ``pieces`` are the streamed text tokens (joined: the whole text); with a tool call,
    ``pieces`` are the 2-3 fragments of its arguments."""

    model: str
    pieces: tuple[str, ...]
    tool_call: SimToolCall | None
    finish: Literal["stop", "length", "tool_calls", "stop_sequence"]
    stop_sequence: str | None
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0

    @property
    def text(self) -> str:
        return "" if self.tool_call is not None else "".join(self.pieces)


@dataclass(frozen=True, slots=True)
class EmbedRequest:
    model: str
    inputs: tuple[str, ...]
    dimensions: int | None = None
    header_behaviour: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    """Matched against the path with ``fullmatch``; named groups become ``params``."""
    operation: Operation


@dataclass(frozen=True, slots=True)
class Call:
    """One incoming HTTP request, matched to a route."""

    route: Route
    params: Mapping[str, str]
    """Path parameters, already percent-decoded."""
    query: Mapping[str, str]
    headers: Mapping[str, str]
    """Lower-cased names."""


class StreamEncoder(Protocol):
    content_type: bytes

    def start(self) -> bytes: ...

    def text(self, piece: str) -> bytes: ...

    def tool_start(self, call: SimToolCall) -> bytes: ...

    def tool_arguments(self, fragment: str) -> bytes: ...

    def finish(self) -> bytes: ...

    def malformed(self) -> bytes: ...


class Dialect(Protocol):
    name: str
    routes: tuple[Route, ...]
    embeds: bool

    def parse_chat(self, call: Call, body: Any) -> SimRequest: ...

    def complete(self, call: Call, request: SimRequest, answer: Answer) -> bytes: ...

    def stream_encoder(self, call: Call, request: SimRequest, answer: Answer) -> StreamEncoder: ...

    def error(self, error: SimError) -> tuple[int, list[tuple[bytes, bytes]], bytes]: ...

    def parse_embed(self, call: Call, body: Any) -> EmbedRequest: ...

    def embed_response(
        self, call: Call, request: EmbedRequest, vectors: list[list[float]], tokens: int
    ) -> bytes: ...
