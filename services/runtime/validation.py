"""Validating data against a schema model, with an OpenAI-style 400 that names
the first bad field (``messages[0].content``)."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from services.runtime.errors import InvalidRequest

Model = TypeVar("Model", bound=BaseModel)


def validate(model: type[Model], data: dict[str, Any]) -> Model:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _describe(exc) from None


def _describe(exc: ValidationError) -> InvalidRequest:
    errors = exc.errors(include_url=False)
    first = errors[0]
    param = _param(first["loc"])
    message = f"{param or 'body'}: {first['msg']}"
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return InvalidRequest(message, param=param, code="invalid_value")


def _param(loc: tuple[int | str, ...]) -> str | None:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in {"str", "list[...]"} or part.startswith(("function-", "tagged-union")):
            continue
        else:
            out = f"{out}.{part}" if out else part
    return out or None
