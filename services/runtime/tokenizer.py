"""Counting tokens when an upstream reports none, with the model's own BPE when
one is available offline.

OpenAI-family models (``gpt-4o``, ``gpt-4.1``, ``o1``/``o3``/``o4``, ``gpt-5``:
o200k; ``gpt-4``, ``gpt-3.5``, ``text-embedding-*``: cl100k) are counted with
``bpe-openai``, whose wheels bundle the encodings (a tiktoken-compatible API;
tiktoken itself downloads them at run time, which these machines cannot).
Other providers publish no offline tokenizer: their counts use the character
heuristic of :mod:`services.runtime.tokens`. Either way the usage row is
flagged ``usage_estimated``.

This runs off the request path (a worker finishing an attempt without usage);
the ingress keeps the cheap heuristic for admission and routing.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any, Protocol

from services.runtime.tokens import estimate_prompt_tokens, estimate_text_tokens

log = logging.getLogger("igw.tokenizer")

MESSAGE_FRAMING = 3
"""Tokens OpenAI's chat format adds per message (role and separators)."""
REPLY_PRIMING = 3
"""Tokens that start the assistant's reply."""
IMAGE_TOKENS = 85

_O200K = ("gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4", "chatgpt-4o")
_CL100K = ("gpt-4", "gpt-3.5", "text-embedding-")


class Encoding(Protocol):
    def encode(self, text: str) -> list[int]: ...


@lru_cache(maxsize=8)
def encoding_for(model: str) -> Encoding | None:
    """The model's BPE, or None when there is no offline tokenizer for it."""
    name = model.strip().lower().removeprefix("openai/")
    if name.startswith(_O200K):
        encoding = "o200k_base"
    elif name.startswith(_CL100K):
        encoding = "cl100k_base"
    else:
        return None
    try:
        import bpe_openai
    except ImportError:  # an install without it: the heuristic still counts
        return None
    try:
        found: Encoding = bpe_openai.get_encoding(encoding)
    except Exception as exc:  # a broken wheel must not break accounting
        log.warning("the %s tokenizer is unavailable (%s); estimating instead", encoding, exc)
        return None
    return found


def count_text(text: str, model: str) -> int:
    encoding = encoding_for(model)
    if encoding is None:
        return estimate_text_tokens(text)
    return len(encoding.encode(text))


def count_prompt(body: dict[str, Any], model: str) -> int:
    """Prompt tokens of a chat or embeddings body for ``model``."""
    encoding = encoding_for(model)
    if encoding is None:
        return estimate_prompt_tokens(body)
    inputs = body.get("input")
    if isinstance(inputs, str):
        return len(encoding.encode(inputs))
    if isinstance(inputs, list):
        return sum(len(encoding.encode(i)) for i in inputs if isinstance(i, str))
    total = REPLY_PRIMING
    for message in body.get("messages") or ():
        if not isinstance(message, dict):
            continue
        total += MESSAGE_FRAMING
        content = message.get("content")
        if isinstance(content, str):
            total += len(encoding.encode(content))
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    total += len(encoding.encode(part["text"]))
                elif isinstance(part, dict):
                    total += IMAGE_TOKENS
    return total
