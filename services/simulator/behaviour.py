"""Per-request behaviour of the provider simulator.

A behaviour is written like a URL query string. It can follow the requested model name
(``sim?ttft_ms=50&tokens=100&fault=cut&fault_after=3``) and/or be sent in the
``X-Sim-Behavior`` request header (``ttft_ms=50&tokens=100``). Header values override
model values key by key. Grammar::

    behaviour := pair ("&" pair)*          empty pairs ("a=1&&b=2", trailing "&") are ignored
    pair      := key "=" value             the last occurrence of a key wins

Keys (unknown keys or bad values are rejected with :class:`BehaviourError`):

=============  =======  =======================================================================
key            type     meaning
=============  =======  =======================================================================
ttft_ms        float    delay before the response headers (non-stream) or before the first
                        chunk (stream); default 0
itl_ms         float    gap between streamed tokens; default 0
tokens         int      output length in tokens; default 16; capped by ``max_completion_tokens``
                        / ``max_tokens`` (then ``finish_reason`` is ``length``)
fault          enum     none (default); an HTTP error: 400, 401, 403, 404, 413, 429, 500, 503,
                        529 (each dialect renders it in its provider's error shape and may
                        use that provider's status, e.g. 503 where it has no 529); context
                        (a 400 saying the prompt exceeds the context window); content_filter
                        (a 400 refusing the prompt under a content policy); or a
                        transport fault: stall, cut, reset, malformed
fault_after    int      number of token chunks sent before a stream fault is injected
                        (``cut``/``reset``/``malformed`` default to 2; ``stall`` without it
                        stalls before the response headers)
retry_after    float    ``retry-after`` seconds sent with ``fault=429``; default 1
stall_ms       float    how long ``fault=stall`` holds the request; default forever
tool_call      bool     ``1``/``true`` forces a tool call to the first (or named) function
echo           bool     answer with the conversation as the simulator understood it
                        (see :func:`services.simulator.engine.echo_text`)
cached_tokens  int      report this many prompt tokens as read from a prompt cache
fault_times    int      inject the fault only into the first N requests with this exact
                        model string (then answer normally): a transient failure
=============  =======  =======================================================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Final, Literal, get_args

Fault = Literal[
    "none",
    "400",
    "401",
    "403",
    "404",
    "413",
    "429",
    "500",
    "503",
    "529",
    "context",
    "content_filter",
    "stall",
    "cut",
    "reset",
    "malformed",
]

_FAULT_BY_NAME: Final[dict[str, Fault]] = {name: name for name in get_args(Fault)}
FAULTS: Final[frozenset[str]] = frozenset(_FAULT_BY_NAME)
ERROR_FAULTS: Final[frozenset[str]] = frozenset(
    {"400", "401", "403", "404", "413", "429", "500", "503", "529", "context", "content_filter"}
)
DEFAULT_MODEL: Final = "sim"
DEFAULT_FAULT_AFTER: Final = 2

_FLOAT_KEYS: Final = frozenset({"ttft_ms", "itl_ms", "retry_after", "stall_ms"})
_INT_KEYS: Final = frozenset({"tokens", "fault_after", "cached_tokens", "fault_times"})
KEYS: Final[tuple[str, ...]] = (
    "ttft_ms",
    "itl_ms",
    "tokens",
    "fault",
    "fault_after",
    "retry_after",
    "stall_ms",
    "tool_call",
    "echo",
    "cached_tokens",
    "fault_times",
)
_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})


class BehaviourError(ValueError):
    """A behaviour string names an unknown key or carries a bad value."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


@dataclass(frozen=True, slots=True)
class Behaviour:
    """How the simulator answers one request. ``model`` is the name echoed back."""

    model: str = DEFAULT_MODEL
    ttft_ms: float = 0.0
    itl_ms: float = 0.0
    tokens: int = 16
    fault: Fault = "none"
    fault_after: int | None = None
    retry_after: float = 1.0
    stall_ms: float | None = None
    tool_call: bool = False
    echo: bool = False
    cached_tokens: int = 0
    fault_times: int | None = None

    @property
    def stream_fault_after(self) -> int:
        """Token chunks sent before a stream fault (``cut``/``reset``/``malformed``/``stall``)."""
        return DEFAULT_FAULT_AFTER if self.fault_after is None else self.fault_after


def _parse_pairs(text: str, source: str, into: dict[str, str]) -> None:
    for part in text.split("&"):
        if not part:
            continue
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep:
            raise BehaviourError(key, f"Simulator behaviour key {key!r} in {source} has no value")
        if key not in KEYS:
            raise BehaviourError(
                key,
                f"Unknown simulator behaviour key {key!r} in {source}; "
                f"known keys: {', '.join(KEYS)}",
            )
        into[key] = value.strip()


def _float(key: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number < 0:
        raise BehaviourError(
            key, f"Invalid value {value!r} for simulator behaviour key {key!r}: expected >= 0"
        )
    return number


def _int(key: str, value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        raise BehaviourError(
            key,
            f"Invalid value {value!r} for simulator behaviour key {key!r}: expected an int >= 0",
        )
    return number


@lru_cache(maxsize=4096)
def _parse(model: str, header: str | None) -> Behaviour:
    name, _, query = model.partition("?")
    values: dict[str, str] = {}
    _parse_pairs(query, "model", values)
    if header:
        _parse_pairs(header, "X-Sim-Behavior header", values)

    floats: dict[str, float] = {}
    ints: dict[str, int] = {}
    fault: Fault = "none"
    flags: dict[str, bool] = {}
    for key, value in values.items():
        if key in _FLOAT_KEYS:
            floats[key] = _float(key, value)
        elif key in _INT_KEYS:
            ints[key] = _int(key, value)
        elif key == "fault":
            parsed_fault = _FAULT_BY_NAME.get(value)
            if parsed_fault is None:
                raise BehaviourError(
                    key,
                    f"Invalid value {value!r} for simulator behaviour key 'fault'; "
                    f"expected one of: {', '.join(get_args(Fault))}",
                )
            fault = parsed_fault
        else:  # a boolean key
            lowered = value.lower()
            if lowered not in _TRUE and lowered not in _FALSE:
                raise BehaviourError(
                    key, f"Invalid value {value!r} for simulator behaviour key {key!r}"
                )
            flags[key] = lowered in _TRUE

    return Behaviour(
        model=name or DEFAULT_MODEL,
        ttft_ms=floats.get("ttft_ms", 0.0),
        itl_ms=floats.get("itl_ms", 0.0),
        tokens=ints.get("tokens", 16),
        fault=fault,
        fault_after=ints.get("fault_after"),
        retry_after=floats.get("retry_after", 1.0),
        stall_ms=floats.get("stall_ms"),
        tool_call=flags.get("tool_call", False),
        echo=flags.get("echo", False),
        cached_tokens=ints.get("cached_tokens", 0),
        fault_times=ints.get("fault_times"),
    )


def parse_behaviour(model: str, header: str | None) -> Behaviour:
    """Parse the behaviour from a model string and an optional ``X-Sim-Behavior`` header.

    Raises :class:`BehaviourError` (with the offending ``key``) on unknown keys or bad values.
    Results are memoised: the common case (same model string every time) costs a dict lookup.
    """
    return _parse(model, header)
