"""The arguments of the one tool call the simulator answers with.

:func:`tool_arguments` fills a small valid argument object from the function's
parameter schema; :func:`split_arguments` cuts the arguments into the 2-3 fragments
a stream carries.
"""

from __future__ import annotations

from typing import Any

import orjson


def _example_value(schema: Any) -> Any:
    if not isinstance(schema, dict):
        return "x"
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind in ("number", "integer"):
        return 1
    if kind == "boolean":
        return True
    if kind == "array":
        return []
    if kind == "object":
        return {}
    if kind == "null":
        return None
    return "x"


def tool_arguments(parameters: Any) -> str:
    """A small valid JSON object for a function's parameter schema: each property gets
    ``"x"`` (string), ``1`` (number/integer), ``true`` (boolean), ``[]``, ``{}``, or the
    first ``enum`` value."""
    properties = parameters.get("properties") if isinstance(parameters, dict) else None
    if not isinstance(properties, dict):
        return "{}"
    return orjson.dumps({str(k): _example_value(v) for k, v in properties.items()}).decode()


def split_arguments(arguments: str) -> list[str]:
    """Split tool-call arguments in 2-3 fragments, as a streaming model would."""
    if len(arguments) < 3:
        return list(arguments) or [""]
    third = len(arguments) // 3
    return [arguments[:third], arguments[third : 2 * third], arguments[2 * third :]]
