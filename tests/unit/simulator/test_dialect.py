"""Wire-shape helpers: token estimates, tool arguments, fragments."""

from __future__ import annotations

import json

import orjson

from services.simulator.openai_dialect import WORDS, ChunkEncoder, completion_text
from services.simulator.request import estimate_prompt_tokens
from services.simulator.tools import split_arguments, tool_arguments


def test_completion_text_is_deterministic_words() -> None:
    assert completion_text(3) == "lorem ipsum dolor "
    assert completion_text(0) == ""
    assert completion_text(len(WORDS) + 1).endswith(f"{WORDS[-1]} {WORDS[0]} ")


def test_prompt_token_estimate() -> None:
    assert estimate_prompt_tokens([{"role": "user", "content": "one two three"}]) == 4
    assert estimate_prompt_tokens([{"role": "user", "content": ""}]) == 1
    parts = [{"type": "text", "text": "a b"}, {"type": "image_url", "image_url": {"url": "x"}}]
    assert estimate_prompt_tokens([{"role": "system", "content": "x"}, {"content": parts}]) == 2 + 3


def test_tool_arguments_follow_the_schema() -> None:
    schema = {
        "type": "object",
        "properties": {
            "s": {"type": "string"},
            "n": {"type": "number"},
            "i": {"type": "integer"},
            "b": {"type": "boolean"},
            "e": {"type": "string", "enum": ["c", "f"]},
            "o": {"type": ["null", "integer"]},
        },
    }
    assert json.loads(tool_arguments(schema)) == {
        "s": "x",
        "n": 1,
        "i": 1,
        "b": True,
        "e": "c",
        "o": 1,
    }
    assert tool_arguments(None) == "{}"


def test_split_arguments_in_two_or_three() -> None:
    for arguments in ("{}", '{"a":1}', '{"city":"x","days":1}'):
        pieces = split_arguments(arguments)
        assert 2 <= len(pieces) <= 3
        assert "".join(pieces) == arguments


def test_usage_null_only_when_usage_requested() -> None:
    without = orjson.loads(ChunkEncoder("sim", include_usage=False).content("a ")[6:])
    with_usage = orjson.loads(ChunkEncoder("sim", include_usage=True).content("a ")[6:])
    assert "usage" not in without
    assert with_usage["usage"] is None


def test_fast_frames_equal_serialised_chunks() -> None:
    for include_usage in (False, True):
        encoder = ChunkEncoder("m", include_usage=include_usage)
        role = orjson.loads(encoder.role()[6:])
        content = orjson.loads(encoder.content('say "hi"\n')[6:])
        arguments = orjson.loads(encoder.tool_arguments('{"a":')[6:])
        for frame in (content, arguments):
            assert set(frame) == set(role)
            assert {k: v for k, v in frame.items() if k != "choices"} == {
                k: v for k, v in role.items() if k != "choices"
            }
        assert content["choices"] == [
            {
                "index": 0,
                "delta": {"content": 'say "hi"\n'},
                "logprobs": None,
                "finish_reason": None,
            }
        ]
        assert arguments["choices"][0]["delta"] == {
            "tool_calls": [{"index": 0, "function": {"arguments": '{"a":'}}]
        }
