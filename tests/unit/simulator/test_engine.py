"""The dialect-neutral engine and the OpenAI stream frames."""

from __future__ import annotations

import json

import orjson
import pytest

from services.simulator.behaviour import parse_behaviour
from services.simulator.dialect import Answer, Item, SimError, SimRequest, SimTool
from services.simulator.dialects.openai import OpenAIStream
from services.simulator.engine import (
    WORDS,
    completion_text,
    echo_text,
    embed_vector,
    plan,
    prompt_tokens,
)
from services.simulator.tools import split_arguments, tool_arguments


def test_completion_text_is_deterministic_words() -> None:
    assert completion_text(3) == "lorem ipsum dolor "
    assert completion_text(0) == ""
    assert completion_text(len(WORDS) + 1).endswith(f"{WORDS[-1]} {WORDS[0]} ")


def test_prompt_token_estimate() -> None:
    assert prompt_tokens((Item("user", "one two three"),)) == 4
    assert prompt_tokens((Item("user", ""),)) == 1
    assert (
        prompt_tokens((Item("system", "x"), Item("user", "a b"), Item("image", "png")))
        == 2 + 3 + 85
    )


def _plan(model: str = "sim", **fields: object) -> Answer:
    request = SimRequest(model=model, **fields)  # type: ignore[arg-type]
    return plan(request, parse_behaviour(model, None))


def test_text_answer_and_max_tokens() -> None:
    answer = _plan("sim?tokens=5")
    assert answer.text == completion_text(5)
    assert (answer.finish, answer.completion_tokens) == ("stop", 5)
    capped = _plan("sim?tokens=5", max_tokens=2)
    assert (capped.text, capped.finish, capped.completion_tokens) == ("lorem ipsum ", "length", 2)


def test_stop_sequence_cuts_before_the_earliest_match() -> None:
    answer = _plan("sim?tokens=8", stop=("amet", "dolor"))
    assert answer.text == "lorem ipsum "
    assert (answer.finish, answer.stop_sequence) == ("stop_sequence", "dolor")
    assert _plan("sim?tokens=8", stop=("absent",)).finish == "stop"


def test_echo_answers_the_conversation_as_understood() -> None:
    items = (Item("system", "be brief"), Item("image", "image/png"), Item("result", "sunny"))
    answer = _plan("sim?echo=1", items=items)
    assert answer.text == "system:be brief | image:image/png | result:sunny"
    assert echo_text(items) == answer.text


def test_tool_choice_rules() -> None:
    tools = (SimTool("a", {"properties": {"x": {"type": "integer"}}}), SimTool("b"))
    assert _plan(tools=tools).tool_call is None
    required = _plan(tools=tools, tool_choice="required")
    assert required.tool_call is not None and required.tool_call.name == "a"
    assert required.finish == "tool_calls" and "".join(required.pieces) == '{"x":1}'
    named = _plan(tools=tools, tool_choice="b")
    assert named.tool_call is not None and named.tool_call.name == "b"
    assert _plan("sim?tool_call=1", tools=tools, tool_choice="none").tool_call is None
    with pytest.raises(SimError):
        _plan(tool_choice="required")
    with pytest.raises(SimError):
        _plan(tools=tools, tool_choice="missing")


def test_embed_vectors_are_deterministic_unit_vectors() -> None:
    one = embed_vector("hello", 8)
    assert one == embed_vector("hello", 8) != embed_vector("world", 8)
    assert len(one) == 8 and abs(sum(v * v for v in one) - 1) < 1e-4


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
    answer = _plan()
    without = orjson.loads(OpenAIStream(answer, include_usage=False).text("a ")[6:])
    with_usage = orjson.loads(OpenAIStream(answer, include_usage=True).text("a ")[6:])
    assert "usage" not in without
    assert with_usage["usage"] is None


def test_fast_frames_equal_serialised_chunks() -> None:
    for include_usage in (False, True):
        encoder = OpenAIStream(_plan("m"), include_usage=include_usage)
        role = orjson.loads(encoder.start()[6:])
        content = orjson.loads(encoder.text('say "hi"\n')[6:])
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
