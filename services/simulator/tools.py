"""The one tool call the simulator answers with.

This module holds :class:`ToolCall` (a function name and its JSON arguments, which cost
``max(1, ceil(len(name + arguments) / 4))`` completion tokens), :func:`choose_tool_call`, which
decides from ``tool_choice``, the request's function tools and the ``tool_call`` behaviour
whether to answer with a call and to which function, :func:`tool_arguments`, which fills a
small valid argument object from the function's parameter schema, :func:`split_arguments`,
which cuts the arguments into the 2-3 fragments a stream carries, and
:func:`new_tool_call_id`.
"""

from __future__ import annotations

from dataclasses import dataclass
from random import getrandbits
from typing import Any

import orjson

from services.simulator.errors import OpenAIError
from services.simulator.request import ChatRequest


@dataclass(frozen=True, slots=True)
class ToolCall:
    """The one tool call the simulator answers with."""

    name: str
    arguments: str

    @property
    def completion_tokens(self) -> int:
        return max(1, -(-(len(self.name) + len(self.arguments)) // 4))


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


def _function_tools(tools: list[Any]) -> list[dict[str, Any]]:
    functions: list[dict[str, Any]] = []
    for tool in tools:
        if isinstance(tool, dict) and tool.get("type", "function") == "function":
            function = tool.get("function")
            if isinstance(function, dict) and isinstance(function.get("name"), str):
                functions.append(function)
    return functions


def choose_tool_call(request: ChatRequest, forced: bool) -> ToolCall | None:
    """The tool call to answer with, or None for a text answer.

    A call is made when ``tool_choice`` names a function or is ``"required"``, or when the
    behaviour forces it (``tool_call=1``); it targets the named function, else the first one.
    """
    choice = request.tool_choice
    named: str | None = None
    if isinstance(choice, dict) and choice.get("type") == "function":
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(name, str):
            raise OpenAIError(
                400,
                "Missing required parameter: 'tool_choice.function.name'.",
                param="tool_choice.function.name",
                code="missing_required_parameter",
            )
        named = name
    wanted = forced or named is not None or choice == "required"
    if not wanted:
        return None
    functions = _function_tools(request.tools or [])
    if not functions:
        param = "tool_choice" if (named is not None or choice == "required") else "tools"
        raise OpenAIError(
            400,
            "A tool call was requested but the request has no function tools.",
            param=param,
        )
    target = functions[0]
    if named is not None:
        found = next((f for f in functions if f["name"] == named), None)
        if found is None:
            raise OpenAIError(
                400,
                f"Invalid value for 'tool_choice': no function named {named!r} in 'tools'.",
                param="tool_choice",
                code="invalid_value",
            )
        target = found
    return ToolCall(name=target["name"], arguments=tool_arguments(target.get("parameters")))


def split_arguments(arguments: str) -> list[str]:
    """Split tool-call arguments in 2-3 fragments, as a streaming model would."""
    if len(arguments) < 3:
        return list(arguments) or [""]
    third = len(arguments) // 3
    return [arguments[:third], arguments[third : 2 * third], arguments[2 * third :]]


def new_tool_call_id() -> str:
    return f"call_{getrandbits(96):024x}"
