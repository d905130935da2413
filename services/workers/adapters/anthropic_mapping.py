"""OpenAI chat bodies → Anthropic Messages requests, and Anthropic answers and errors back.

Request rules (:func:`to_anthropic`):

* ``system``/``developer`` messages are lifted into the top-level ``system``
  (their texts joined by a blank line, in order).
* The other messages become alternating ``user``/``assistant`` turns of content
  blocks; consecutive messages of one role are merged into one turn. ``tool``
  messages are ``tool_result`` blocks (``tool_use_id``, text ``content``) in a
  user turn, placed before that turn's other blocks as the API demands. Assistant
  ``tool_calls`` are ``tool_use`` blocks whose ``input`` is the parsed arguments.
  A conversation that does not start with a user turn gets a ``"."`` user turn
  first (the API needs one); empty texts are left out (the API refuses them).
* Image parts: ``data:`` URLs → base64 sources, http(s) URLs → url sources; PDF
  ``file`` parts with ``file_data`` → ``document`` blocks.
* ``tools`` → ``{name, description, input_schema}``; ``tool_choice`` auto → auto,
  required → any, none → none, a named function → ``{"type": "tool", "name"}``;
  ``parallel_tool_calls: false`` → ``disable_parallel_tool_use``.
* ``stop`` → ``stop_sequences``; ``max_completion_tokens``, else ``max_tokens``,
  else the deployment's ``default_max_tokens`` (the API requires one);
  ``temperature``, ``top_p`` as they are; ``user`` → ``metadata.user_id``;
  ``response_format`` ``json_schema`` → ``output_config.format`` (Anthropic's
  structured outputs), ``text`` is a no-op, ``json_object`` has no equivalent and
  is unsupported; ``n`` is accepted only as 1.
* Anything else goes through the deployment's ``drop_params`` policy.

Answer rules: text blocks are joined into ``content``; ``tool_use`` blocks become
``tool_calls`` (JSON-dumped ``input``); stop reasons map by :data:`FINISH`; usage
``prompt_tokens`` is ``input_tokens + cache_read_input_tokens +
cache_creation_input_tokens`` with ``cached_tokens = cache_read_input_tokens``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import orjson

from schemas.openai_chat import Usage
from services.runtime.errors import GatewayError, InvalidRequest, upstream_error_for_status
from services.runtime.settings import ModelDeployment
from services.workers import openai_shapes, params

SUPPORTED: Final = frozenset(
    {
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "stop",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "response_format",
        "n",
    }
)
FINISH: Final = {
    "end_turn": "stop",
    "max_tokens": "length",
    "stop_sequence": "stop",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    "pause_turn": "stop",
    "model_context_window_exceeded": "length",
}
ERROR_STATUS: Final = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
"""Anthropic's error types and the statuses they come with (the type decides)."""
PLACEHOLDER_USER_TURN: Final = "."


def _bad(message: str, param: str | None = None) -> InvalidRequest:
    return InvalidRequest(message, param=param)


def _text(content: Any, where: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        return "".join(
            str(p.get("text", ""))
            for p in content
            if isinstance(p, dict) and p.get("type") == "text"
        )
    raise _bad(f"{where}.content must be a string or a list of parts", f"{where}.content")


def _data_url(url: str, where: str) -> tuple[str, str]:
    head, sep, data = url[5:].partition(",")
    media_type, _, encoding = head.partition(";")
    if not sep or encoding != "base64" or not media_type:
        raise _bad(f"{where}: only base64 data: URLs are supported", where)
    return media_type, data


def _image(part: dict[str, Any], where: str) -> dict[str, Any]:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str) or not url:
        raise _bad(f"{where}.image_url.url is required", f"{where}.image_url.url")
    if url.startswith("data:"):
        media_type, data = _data_url(url, where)
        source = {"type": "base64", "media_type": media_type, "data": data}
        return {"type": "image", "source": source}
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise _bad(f"{where}.image_url.url must be a data: or http(s) URL", f"{where}.image_url.url")


def _file(part: dict[str, Any], where: str) -> dict[str, Any]:
    file = part.get("file")
    data = file.get("file_data") if isinstance(file, dict) else None
    if not isinstance(data, str) or not data.startswith("data:application/pdf;"):
        raise _bad(f"{where}: only PDF file parts with file_data are supported", where)
    media_type, payload = _data_url(data, where)
    return {
        "type": "document",
        "source": {"type": "base64", "media_type": media_type, "data": payload},
    }


def _user_blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if content is None or isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise _bad(f"{where}.content must be a string or a list of parts", f"{where}.content")
    blocks: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if part.get("text"):
                blocks.append({"type": "text", "text": str(part["text"])})
        elif kind == "image_url":
            blocks.append(_image(part, f"{where}.content[{j}]"))
        elif kind == "file":
            blocks.append(_file(part, f"{where}.content[{j}]"))
        else:
            raise _bad(f"{where}.content[{j}]: part type {kind!r} is not supported by Anthropic")
    return blocks


def _tool_use(call: Any, where: str) -> dict[str, Any]:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise _bad(f"{where}.function.name is required", f"{where}.function.name")
    try:
        arguments = orjson.loads(function.get("arguments") or "{}")
    except orjson.JSONDecodeError:
        raise _bad(f"{where}.function.arguments is not valid JSON", where) from None
    if not isinstance(arguments, dict):
        raise _bad(f"{where}.function.arguments must be a JSON object", where)
    call_id = call.get("id") or openai_shapes.new_call_id()
    return {"type": "tool_use", "id": call_id, "name": function["name"], "input": arguments}


def _turn(message: Any, where: str) -> tuple[str, list[dict[str, Any]]] | str:
    """A message as (role, blocks), or as system text."""
    if not isinstance(message, dict):
        raise _bad(f"{where} must be an object", where)
    role = message.get("role")
    content = message.get("content")
    if role in ("system", "developer"):
        return _text(content, where)
    if role == "user":
        return "user", _user_blocks(content, where)
    if role == "assistant":
        text = _text(content, where)
        blocks = [{"type": "text", "text": text}] if text else []
        calls = message.get("tool_calls") or []
        blocks += [_tool_use(c, f"{where}.tool_calls[{k}]") for k, c in enumerate(calls)]
        return "assistant", blocks
    if role == "tool":
        call_id = message.get("tool_call_id")
        if not isinstance(call_id, str):
            raise _bad(f"{where}.tool_call_id is required", f"{where}.tool_call_id")
        result = {"type": "tool_result", "tool_use_id": call_id, "content": _text(content, where)}
        return "user", [result]
    raise _bad(f"{where}.role {role!r} is not supported by Anthropic", f"{where}.role")


def _conversation(messages: Any) -> tuple[str, list[dict[str, Any]]]:
    if not isinstance(messages, list):
        raise _bad("messages must be a list", "messages")
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        turn = _turn(message, f"messages[{i}]")
        if isinstance(turn, str):
            if turn:
                system.append(turn)
            continue
        role, blocks = turn
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    for entry in turns:  # tool results first in their user turn (a stable sort)
        entry["content"].sort(key=lambda b: b["type"] != "tool_result")
    if not turns or turns[0]["role"] != "user":
        turns.insert(
            0, {"role": "user", "content": [{"type": "text", "text": PLACEHOLDER_USER_TURN}]}
        )
    return "\n\n".join(system), turns


def _tools(body: dict[str, Any]) -> list[dict[str, Any]]:
    tools: list[dict[str, Any]] = []
    for i, tool in enumerate(body.get("tools") or []):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or tool.get("type", "function") != "function":
            raise _bad(f"tools[{i}]: only function tools are supported by Anthropic", "tools")
        if not isinstance(function.get("name"), str):
            raise _bad(f"tools[{i}].function.name is required", f"tools[{i}].function.name")
        schema = function.get("parameters") or {"type": "object", "properties": {}}
        out: dict[str, Any] = {"name": function["name"], "input_schema": schema}
        if function.get("description"):
            out["description"] = function["description"]
        if isinstance(function.get("strict"), bool):
            out["strict"] = function["strict"]
        tools.append(out)
    return tools


def _tool_choice(body: dict[str, Any]) -> dict[str, Any] | None:
    choice = body.get("tool_choice")
    out: dict[str, Any] | None
    if choice is None:
        out = None
    elif choice in ("auto", "none"):
        out = {"type": choice}
    elif choice == "required":
        out = {"type": "any"}
    elif isinstance(choice, dict) and isinstance((choice.get("function") or {}).get("name"), str):
        out = {"type": "tool", "name": choice["function"]["name"]}
    else:
        raise _bad(f"tool_choice {choice!r} is not supported", "tool_choice")
    if body.get("parallel_tool_calls") is False and (out is None or out["type"] != "none"):
        out = {**(out or {"type": "auto"}), "disable_parallel_tool_use": True}
    return out


def _output_format(body: dict[str, Any], dep: ModelDeployment) -> dict[str, Any] | None:
    fmt = body.get("response_format")
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if fmt is None or kind == "text":
        return None
    schema = (fmt.get("json_schema") or {}).get("schema") if isinstance(fmt, dict) else None
    if kind == "json_schema" and isinstance(schema, dict):
        return {"type": "json_schema", "schema": schema}
    params.apply_policy({"response_format": fmt}, frozenset(), dep)  # raises unless dropping
    return None


def to_anthropic(body: dict[str, Any], dep: ModelDeployment, *, stream: bool) -> dict[str, Any]:
    """The Messages request for an OpenAI chat body (see the module docstring)."""
    if body.get("n") in (None, 1):
        body = {k: v for k, v in body.items() if k != "n"}
    body = params.apply_policy(body, SUPPORTED, dep)
    system, messages = _conversation(body.get("messages"))
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    out: dict[str, Any] = {
        "model": body.get("model") or dep.model,
        "messages": messages,
        "max_tokens": max_tokens or dep.default_max_tokens,
    }
    if system:
        out["system"] = system
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            out[name] = body[name]
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if tools := _tools(body):
        out["tools"] = tools
        if (choice := _tool_choice(body)) is not None:
            out["tool_choice"] = choice
    if isinstance(body.get("user"), str) and body["user"]:
        out["metadata"] = {"user_id": body["user"]}
    if (output_format := _output_format(body, dep)) is not None:
        out["output_config"] = {"format": output_format}
    if stream:
        out["stream"] = True
    return out


def usage(raw: Mapping[str, Any] | None) -> Usage:
    raw = raw or {}
    cached = int(raw.get("cache_read_input_tokens") or 0)
    created = int(raw.get("cache_creation_input_tokens") or 0)
    prompt = int(raw.get("input_tokens") or 0) + cached + created
    return openai_shapes.usage(prompt, int(raw.get("output_tokens") or 0), cached)


def finish_reason(stop_reason: Any) -> str:
    return FINISH.get(str(stop_reason), "stop") if stop_reason else "stop"


def to_completion(data: dict[str, Any]) -> tuple[dict[str, Any], Usage, str]:
    """A ``chat.completion`` (with its usage and finish reason) for a ``message`` object."""
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in data.get("content") or []:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            texts.append(str(block.get("text", "")))
        elif block.get("type") == "tool_use":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            calls.append(
                openai_shapes.tool_call(str(block.get("id")), str(block.get("name")), arguments)
            )
    totals = usage(data.get("usage"))
    finish = finish_reason(data.get("stop_reason"))
    content = "".join(texts) if texts or not calls else None
    completion = openai_shapes.completion(
        model=str(data.get("model") or ""),
        content=content,
        finish_reason=finish,
        usage=totals,
        tool_calls=calls,
        completion_id=f"chatcmpl-{data['id']}" if isinstance(data.get("id"), str) else None,
    )
    return completion, totals, finish


def error_for(dep: str, status: int | None, error: Any, retry_after: float | None) -> GatewayError:
    """The gateway error for an Anthropic error object (its ``type`` wins over the status)."""
    kind = error.get("type") if isinstance(error, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    message = message if isinstance(message, str) and message else "no details"
    code = ERROR_STATUS.get(str(kind), status or 500)
    where = f"answered {status}" if status is not None else "sent an error mid-stream"
    return upstream_error_for_status(
        code, f"deployment {dep} {where} ({kind}): {message}", retry_after
    )
