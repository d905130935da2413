"""Token counts when an upstream reports none: the model's BPE where one ships."""

from __future__ import annotations

from services.runtime.tokenizer import count_prompt, count_text, encoding_for
from services.runtime.tokens import estimate_prompt_tokens

CHAT = {"messages": [{"role": "user", "content": "What is the capital of France?"}]}


def test_openai_models_are_counted_with_their_encoding() -> None:
    assert encoding_for("gpt-4o-2024-08-06") is not None
    assert encoding_for("gpt-3.5-turbo") is not None
    # o200k splits this sentence into 7 tokens; framing adds 3 per message and 3 for the reply
    assert count_text("What is the capital of France?", "gpt-4o") == 7
    assert count_prompt(CHAT, "gpt-4o") == 7 + 3 + 3
    assert count_prompt({"input": ["hello world", "hi"]}, "text-embedding-3-small") == 3


def test_other_models_fall_back_to_the_heuristic() -> None:
    assert encoding_for("claude-3-5-sonnet") is None
    assert count_prompt(CHAT, "claude-3-5-sonnet") == estimate_prompt_tokens(CHAT)
