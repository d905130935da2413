"""Batch input files: what a valid one holds, and each rejection naming its line."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from services.runtime.batch_input import BatchInputError, check_batch_input, numbered_lines
from services.runtime.errors import ModelNotFound, PermissionDenied

CHAT = "/v1/chat/completions"


def chat(custom_id: str, model: str = "sim", **extra: Any) -> dict[str, Any]:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}
    return {"custom_id": custom_id, "method": "POST", "url": CHAT, "body": body}


def embed(custom_id: str, model: str = "sim-embed") -> dict[str, Any]:
    body = {"model": model, "input": ["a", "b"]}
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/embeddings", "body": body}


def jsonl(*lines: Any) -> list[bytes]:
    out = []
    for line in lines:
        out.append(line if isinstance(line, bytes) else orjson.dumps(line) + b"\n")
    return out


def known_models(model: str) -> None:
    if model == "forbidden":
        raise PermissionDenied(f"this key may not use model `{model}`", code="model_not_allowed")
    if model not in {"sim", "sim-embed"}:
        raise ModelNotFound(f"The model `{model}` does not exist or you do not have access to it.")


def check(lines: list[bytes], max_items: int = 100, max_line_bytes: int = 65536) -> Any:
    return check_batch_input(
        lines, max_items=max_items, max_line_bytes=max_line_bytes, check_model=known_models
    )


def rejected(lines: list[bytes], **limits: int) -> BatchInputError:
    with pytest.raises(BatchInputError) as caught:
        check(lines, **limits)
    error = caught.value
    assert error.status == 400 and error.param == "file"
    assert error.to_info().type == "invalid_request_error"
    return error


def test_a_valid_file() -> None:
    summary = check(jsonl(chat("a"), chat("b", temperature=0), b"\n", chat("c")))
    assert summary.endpoint == CHAT and summary.requests == 3
    assert summary.models == frozenset({"sim"})
    embeddings = check(jsonl(embed("x"), embed("y")))
    assert embeddings.endpoint == "/v1/embeddings" and embeddings.requests == 2


def test_blank_lines_are_skipped_but_counted_and_a_bom_is_dropped() -> None:
    lines = [b"\xef\xbb\xbf" + orjson.dumps(chat("a")) + b"\n", b"\n", b"  \r\n", b"{bad\n"]
    assert [n for n, _ in numbered_lines(lines)] == [1, 4]
    assert rejected(lines).message.startswith("line 4: not valid JSON")
    assert check(jsonl(chat("a"), b"\n", b"\n")).requests == 1
    assert check([orjson.dumps(chat("a"))]).requests == 1  # no final newline


@pytest.mark.parametrize(
    ("bad", "code", "says"),
    [
        (b'{"custom_id": "x", \n', "invalid_json_line", "not valid JSON"),
        (b"\xff\xfe\n", "invalid_json_line", "not valid JSON"),
        (b"[1, 2]\n", "invalid_json_line", "must be a JSON object"),
        ({"method": "POST", "url": CHAT, "body": {}}, "missing_required_parameter", "'custom_id'"),
        ({**chat("x"), "custom_id": ""}, "invalid_value", "custom_id must be a non-empty string"),
        ({**chat("x"), "custom_id": 7}, "invalid_value", "custom_id must be a non-empty string"),
        ({**chat("x"), "method": "GET"}, "invalid_method", 'method must be POST, not "GET"'),
        ({**chat("x"), "url": "/v1/completions"}, "invalid_url", "url must be one of"),
        ({**chat("x"), "body": "hi"}, "invalid_value", "body must be a JSON object"),
        ({**chat("x"), "body": {"model": "sim"}}, "invalid_value", "invalid body: messages"),
        (chat("x", stream=True), "invalid_value", "stream is not supported"),
        (chat("x", model="nope"), "model_not_found", "The model `nope` does not exist"),
        (chat("x", model="forbidden"), "model_not_allowed", "may not use model `forbidden`"),
    ],
)
def test_each_bad_line_is_named(bad: Any, code: str, says: str) -> None:
    error = rejected(jsonl(chat("a"), chat("b"), bad, chat("d")))
    assert error.code == code
    assert error.message.startswith("line 3: ")
    assert says in error.message
    assert error.error.line == 3 and error.error.code == code


def test_params_point_into_the_line() -> None:
    body = rejected(jsonl({**chat("x"), "body": {"model": "sim"}})).error
    assert body.param == "body.messages"
    model = rejected(jsonl(chat("x", model="nope"))).error
    assert model.param == "body.model"
    missing = rejected(jsonl({"custom_id": "x", "url": CHAT, "body": {}})).error
    assert (missing.code, missing.param) == ("missing_required_parameter", "method")


def test_a_body_is_checked_against_its_endpoint() -> None:
    embed_body_on_chat = {**chat("x"), "body": {"model": "sim", "input": "hi"}}
    assert "messages" in rejected(jsonl(embed_body_on_chat)).message
    bad_input = {**embed("x"), "body": {"model": "sim-embed", "input": []}}
    assert rejected(jsonl(bad_input)).message.startswith("line 1: invalid body: input")


def test_duplicate_custom_ids_name_both_lines() -> None:
    error = rejected(jsonl(chat("a"), chat("b"), chat("a")))
    assert error.code == "duplicate_custom_id"
    assert error.message == "line 3: custom_id 'a' is a duplicate of line 1's"


def test_one_endpoint_per_file() -> None:
    error = rejected(jsonl(chat("a"), embed("b")))
    assert error.code == "mismatched_url" and error.message.startswith("line 2: url /v1/embeddings")


def test_an_empty_file() -> None:
    for lines in ([], [b"\n", b"   \n"], [b"\xef\xbb\xbf"]):
        error = rejected(lines)
        assert error.code == "empty_file" and error.error.line is None
        assert "no requests" in error.message


def test_too_many_requests_names_the_first_extra_line() -> None:
    assert check(jsonl(*(chat(str(i)) for i in range(3))), max_items=3).requests == 3
    error = rejected(jsonl(*(chat(str(i)) for i in range(5))), max_items=3)
    assert error.code == "too_many_requests"
    assert error.message == "line 4: the file holds more than 3 requests"


def test_a_line_larger_than_a_request_may_be() -> None:
    big = chat("x", model="sim")
    big["body"]["messages"][0]["content"] = "y" * 2000
    error = rejected(jsonl(chat("a"), big), max_line_bytes=1024)
    assert error.code == "request_too_large"
    assert error.message == "line 2: the request is larger than the limit of 1024 bytes"
