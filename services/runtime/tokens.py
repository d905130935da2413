"""Cheap token estimates, used only when an upstream reports no usage
(for example when a stream is cancelled before its usage chunk)."""

from __future__ import annotations

from typing import Any

CHARS_PER_TOKEN = 4


def estimate_text_tokens(text: str) -> int:
    return max(1, -(-len(text) // CHARS_PER_TOKEN)) if text else 0


def estimate_prompt_tokens(body: dict[str, Any]) -> int:
    """Chat messages, or an embeddings ``input`` (a string or a list of strings)."""
    total = 0
    inputs = body.get("input")
    if isinstance(inputs, str):
        return estimate_text_tokens(inputs)
    if isinstance(inputs, list):
        return sum(estimate_text_tokens(i) for i in inputs if isinstance(i, str))
    for message in body.get("messages") or ():
        if not isinstance(message, dict):
            continue
        total += 4  # role and framing
        content = message.get("content")
        if isinstance(content, str):
            total += estimate_text_tokens(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    total += estimate_text_tokens(part["text"])
                elif isinstance(part, dict):
                    total += 85  # an image or other attachment, at low detail
    return total
