"""The checks a batch input file (``purpose=batch``) passes before it is accepted.

Pure: it reads only the lines it is given and asks ``check_model`` about each
model. A file is JSON Lines, one :class:`~schemas.batch.BatchRequestLine` per
line. Blank lines are skipped but counted, so line numbers (1-based) are the
file's own; a UTF-8 byte order mark opening the file is ignored. The first
problem stops the check with a :class:`BatchInputError` naming its line:

- the line is larger than a request the gateway accepts, not JSON, or not an object;
- ``custom_id`` is missing, not a non-empty string, or used by an earlier line;
- ``method`` is not ``POST``; ``url`` is not a batch endpoint, or differs from the
  first line's (a batch runs one endpoint);
- ``body`` fails the endpoint's own request validation, asks to stream, or names
  a model that does not exist or that the caller may not use;
- the file holds no request, or more than ``max_items``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, NoReturn

import orjson
from pydantic import ValidationError

from schemas.batch import BATCH_ENDPOINTS, BatchError, BatchRequestLine
from schemas.openai_chat import ChatCompletionRequest
from schemas.openai_embeddings import EmbeddingsRequest
from services.runtime.errors import GatewayError, InvalidRequest
from services.runtime.validation import validate

ModelCheck = Callable[[str], None]
"""Raises a ``GatewayError`` when the caller may not use the model (``dispatch.check_model``)."""

BODY_MODELS: dict[str, type[ChatCompletionRequest] | type[EmbeddingsRequest]] = {
    "/v1/chat/completions": ChatCompletionRequest,
    "/v1/embeddings": EmbeddingsRequest,
}
BOM = b"\xef\xbb\xbf"


class BatchInputError(InvalidRequest):
    """A 400 naming the file's first bad line; ``error`` is the batch error object."""

    default_code = "invalid_batch_input"

    def __init__(self, error: BatchError) -> None:
        where = "" if error.line is None else f"line {error.line}: "
        super().__init__(f"{where}{error.message}", code=error.code, param="file")
        self.error = error


@dataclass(frozen=True, slots=True)
class BatchInput:
    """What a valid file holds."""

    endpoint: str
    requests: int
    models: frozenset[str]


def numbered_lines(lines: Iterable[bytes]) -> Iterator[tuple[int, bytes]]:
    """Each non-blank line with its 1-based number."""
    for number, line in enumerate(lines, start=1):
        if number == 1 and line.startswith(BOM):
            line = line[len(BOM) :]
        if line.strip():
            yield number, line


def check_batch_input(
    lines: Iterable[bytes], *, max_items: int, max_line_bytes: int, check_model: ModelCheck
) -> BatchInput:
    endpoint: tuple[str, int] | None = None
    seen: dict[str, int] = {}
    models: set[str] = set()
    count = 0
    for number, raw in numbered_lines(lines):
        count += 1
        if count > max_items:
            _fail(number, "too_many_requests", f"the file holds more than {max_items} requests")
        line = _parse(number, raw, max_line_bytes)
        if endpoint is None:
            endpoint = (line.url, number)
        elif line.url != endpoint[0]:
            message = f"url {line.url} differs from {endpoint[0]} on line {endpoint[1]}; "
            _fail(number, "mismatched_url", message + "a batch runs one endpoint", "url")
        if (first := seen.setdefault(line.custom_id, number)) != number:
            message = f"custom_id {line.custom_id!r} is a duplicate of line {first}'s"
            _fail(number, "duplicate_custom_id", message, "custom_id")
        models.add(_check_body(number, line, check_model))
    if endpoint is None:
        raise BatchInputError(
            BatchError(code="empty_file", message="the file holds no requests (one JSON per line)")
        )
    return BatchInput(endpoint=endpoint[0], requests=count, models=frozenset(models))


def _parse(number: int, raw: bytes, max_line_bytes: int) -> BatchRequestLine:
    if len(raw) > max_line_bytes:
        message = f"the request is larger than the limit of {max_line_bytes} bytes"
        _fail(number, "request_too_large", message)
    try:
        data = orjson.loads(raw.rstrip())  # so the column is within this line
    except orjson.JSONDecodeError as exc:
        _fail(number, "invalid_json_line", f"not valid JSON: {exc.msg} (column {exc.colno})")
    if not isinstance(data, dict):
        _fail(number, "invalid_json_line", "each line must be a JSON object")
    try:
        return BatchRequestLine.model_validate(data)
    except ValidationError as exc:
        _fail(number, *_line_problem(exc))


def _line_problem(exc: ValidationError) -> tuple[str, str, str]:
    """(code, message, param) for the first thing wrong with a line's envelope."""
    first = exc.errors(include_url=False)[0]
    field = str(first["loc"][0]) if first["loc"] else "line"
    if first["type"] == "missing":
        return "missing_required_parameter", f"Missing required parameter: '{field}'.", field
    given = _short(first.get("input"))
    if field == "method":
        return "invalid_method", f"method must be POST, not {given}", field
    if field == "url":
        return "invalid_url", f"url must be one of {', '.join(BATCH_ENDPOINTS)}, not {given}", field
    if field == "custom_id":
        return "invalid_value", f"custom_id must be a non-empty string, not {given}", field
    if field == "body":
        return "invalid_value", "body must be a JSON object (the request's body)", field
    return "invalid_value", f"{field}: {first['msg']}", field


def _check_body(number: int, line: BatchRequestLine, check_model: ModelCheck) -> str:
    """The request's model, once its body passed the endpoint's validation."""
    try:
        body: ChatCompletionRequest | EmbeddingsRequest = validate(BODY_MODELS[line.url], line.body)
    except InvalidRequest as exc:
        param = f"body.{exc.param}" if exc.param else "body"
        _fail(number, exc.code or "invalid_value", f"invalid body: {exc.message}", param)
    if isinstance(body, ChatCompletionRequest) and body.wants_stream:
        _fail(number, "invalid_value", "stream is not supported in a batch", "body.stream")
    try:
        check_model(body.model)
    except GatewayError as exc:
        _fail(number, exc.code or "model_not_found", exc.message, "body.model")
    return body.model


def _short(value: Any, limit: int = 80) -> str:
    text = orjson.dumps(value, default=str).decode()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _fail(number: int, code: str, message: str, param: str | None = None) -> NoReturn:
    raise BatchInputError(BatchError(code=code, message=message, param=param, line=number))
