"""What the simulator answers, whatever the dialect.

:func:`plan` turns a :class:`~services.simulator.dialect.SimRequest` and its
:class:`~services.simulator.behaviour.Behaviour` into an
:class:`~services.simulator.dialect.Answer`:

* a tool call when ``tool_choice`` is ``required`` or names a function, or the
  behaviour forces one (``tool_call=1``) and ``tool_choice`` is not ``none``;
* otherwise text: ``tokens`` deterministic tokens (``WORDS[i] + " "``), or with
  ``echo=1`` the conversation as understood (:func:`echo_text`), cut at the
  earliest stop sequence (finish ``stop_sequence``) or at ``max_tokens``
  (finish ``length``).

Prompt tokens are an estimate, not a tokenizer: each text item costs
``max(1, ceil(words * 4 / 3))`` tokens and each image 85.
"""

from __future__ import annotations

import hashlib
import math
import struct
from random import getrandbits
from typing import Final

import orjson

from services.simulator.behaviour import Behaviour
from services.simulator.dialect import Answer, Item, SimError, SimRequest, SimToolCall
from services.simulator.tools import split_arguments, tool_arguments

_LOREM: Final = (
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor "
    "incididunt ut labore et dolore magna aliqua ut enim ad minim veniam quis nostrud "
    "exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat duis aute irure "
    "dolor in reprehenderit in voluptate velit esse cillum dolore eu fugiat nulla pariatur"
)
WORDS: Final[tuple[str, ...]] = tuple(_LOREM.split())
TOKENS: Final[tuple[str, ...]] = tuple(word + " " for word in WORDS)
IMAGE_TOKENS: Final = 85
DEFAULT_EMBED_DIMENSIONS: Final = 16


def token_text(index: int) -> str:
    return TOKENS[index % len(TOKENS)]


def text_tokens(text: str) -> int:
    return max(1, -(-len(text.split()) * 4 // 3))


def prompt_tokens(items: tuple[Item, ...]) -> int:
    total = sum(IMAGE_TOKENS if i.kind == "image" else text_tokens(i.text) for i in items)
    return max(1, total)


def echo_text(items: tuple[Item, ...]) -> str:
    """The conversation as ``kind:text`` items joined by `` | ``."""
    return " | ".join(f"{item.kind}:{item.text}" for item in items)


def call_item(name: str, arguments: str | object) -> Item:
    """A ``call`` item with canonical (sorted, compact) JSON arguments."""
    if isinstance(arguments, str):
        try:
            arguments = orjson.loads(arguments or "{}")
        except orjson.JSONDecodeError:
            return Item("call", f"{name}({arguments})")
    text = orjson.dumps(arguments, option=orjson.OPT_SORT_KEYS).decode()
    return Item("call", f"{name}({text})")


def new_tool_call_id() -> str:
    return f"call_{getrandbits(96):024x}"


def _tool_call(request: SimRequest, forced: bool) -> SimToolCall | None:
    choice = request.tool_choice
    if choice == "none":
        return None
    named = choice if choice not in (None, "auto", "required") else None
    if not (forced or named is not None or choice == "required"):
        return None
    if not request.tools:
        raise SimError(400, "A tool call was requested but the request has no tools.")
    target = request.tools[0]
    if named is not None:
        found = next((t for t in request.tools if t.name == named), None)
        if found is None:
            raise SimError(400, f"tool_choice names {named!r}, which is not among the tools.")
        target = found
    return SimToolCall(new_tool_call_id(), target.name, tool_arguments(target.parameters))


def _text_pieces(request: SimRequest, behaviour: Behaviour) -> list[str]:
    if behaviour.echo:
        words = echo_text(request.items).split(" ")
        return [w + " " for w in words[:-1]] + [words[-1]] if words else []
    return [token_text(i) for i in range(behaviour.tokens)]


def plan(request: SimRequest, behaviour: Behaviour) -> Answer:
    prompt = prompt_tokens(request.items)
    call = _tool_call(request, behaviour.tool_call)
    if call is not None:
        return Answer(
            model=behaviour.model,
            pieces=tuple(split_arguments(call.arguments)),
            tool_call=call,
            finish="tool_calls",
            stop_sequence=None,
            prompt_tokens=prompt,
            completion_tokens=max(1, -(-(len(call.name) + len(call.arguments)) // 4)),
            cached_tokens=min(prompt, behaviour.cached_tokens),
        )
    pieces = _text_pieces(request, behaviour)
    finish: str = "stop"
    stop_sequence: str | None = None
    if request.stop:
        text = "".join(pieces)
        hits = [(text.find(s), s) for s in request.stop if s and s in text]
        if hits:
            at, stop_sequence = min(hits)
            kept: list[str] = []
            length = 0
            for piece in pieces:
                if length + len(piece) > at:
                    if at > length:
                        kept.append(piece[: at - length])
                    break
                kept.append(piece)
                length += len(piece)
            pieces = kept
            finish = "stop_sequence"
    if request.max_tokens is not None and len(pieces) > request.max_tokens:
        pieces = pieces[: request.max_tokens]
        finish, stop_sequence = "length", None
    return Answer(
        model=behaviour.model,
        pieces=tuple(pieces),
        tool_call=None,
        finish=finish,  # type: ignore[arg-type]
        stop_sequence=stop_sequence,
        prompt_tokens=prompt,
        completion_tokens=len(pieces),
        cached_tokens=min(prompt, behaviour.cached_tokens),
    )


def embed_vector(text: str, dimensions: int) -> list[float]:
    """A deterministic unit vector for ``text`` (same text, same vector)."""
    out: list[float] = []
    counter = 0
    while len(out) < dimensions:
        digest = hashlib.sha256(f"{counter}:{text}".encode()).digest()
        out.extend(v / 2**31 - 1.0 for v in struct.unpack(">8I", digest))
        counter += 1
    vector = out[:dimensions]
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [round(v / norm, 6) for v in vector]


def completion_text(tokens: int) -> str:
    """The deterministic output of ``tokens`` tokens."""
    return "".join(token_text(i) for i in range(tokens))
