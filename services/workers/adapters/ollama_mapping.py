"""Translation rules between OpenAI chat/embeddings bodies and Ollama's native API.

Requests (:func:`chat_request`, :func:`embed_request`):

* messages: ``system``/``developer`` -> ``system``; ``user`` text parts joined by
  newlines, image parts (``data:`` URLs only; Ollama takes no URLs) -> ``images``
  (base64); ``assistant`` ``tool_calls`` -> ``tool_calls: [{function: {name,
  arguments: <object>}}]``; ``tool`` -> ``{role: "tool", content, tool_name}`` with
  the name looked up by ``tool_call_id`` among the earlier assistant calls.
* ``stream`` is always explicit (Ollama streams by default).
* ``options``: ``temperature``, ``top_p``, ``seed``, ``presence_penalty``,
  ``frequency_penalty``, ``stop`` (a list), ``num_predict`` (``max_completion_tokens``
  or ``max_tokens``).
* ``response_format``: ``json_object`` -> ``format: "json"``, ``json_schema`` ->
  ``format: <schema>``, ``text`` -> nothing.
* ``tools`` pass through in OpenAI's function format. Ollama has no ``tool_choice``:
  ``auto`` is its only behaviour, ``none`` sends no tools; ``required`` or a named
  function cannot be honoured and goes through the ``drop_params`` policy like every
  other unsupported parameter (dropped: the model decides; else a 400).

Responses (:func:`completion`, :class:`StreamTranslator`): ``message.content``;
``message.tool_calls`` -> OpenAI tool calls (Ollama's ``id`` when sent, else a new
one; arguments JSON-dumped); ``done_reason`` ``length`` -> ``length``, anything
else -> ``stop`` (``tool_calls`` when the answer has tool calls); usage from
``prompt_eval_count``/``eval_count`` (absent counts are 0: Ollama omits zeros).
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Mapping
from typing import Any, Final

import orjson

from schemas.openai_chat import Usage
from services.runtime.errors import (
    GatewayError,
    InvalidRequest,
    UpstreamError,
    UpstreamProtocolError,
)
from services.runtime.settings import ModelDeployment
from services.workers import openai_shapes
from services.workers.openai_shapes import ChunkBuilder
from services.workers.params import apply_policy
from services.workers.parsing import text_of
from services.workers.protocol import Completion, StreamEvent
from services.workers.upstream_errors import error_from_response

CHAT_PARAMS: Final = frozenset(
    {
        "temperature",
        "top_p",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "stop",
        "max_tokens",
        "max_completion_tokens",
        "tools",
    }
)
EMBED_PARAMS: Final = frozenset({"input", "dimensions", "encoding_format"})
_OPTIONS: Final = ("temperature", "top_p", "seed", "presence_penalty", "frequency_penalty")
_FORMATS: Final = frozenset({"text", "json_object", "json_schema"})


def _supported(body: dict[str, Any]) -> frozenset[str]:
    """The chat parameters this request can keep: ``tool_choice`` and ``response_format``
    count as supported only for the values Ollama can express."""
    extra = set()
    if body.get("tool_choice") in ("auto", "none"):
        extra.add("tool_choice")
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") in _FORMATS:
        extra.add("response_format")
    return CHAT_PARAMS | extra


def _image(part: dict[str, Any], param: str) -> str:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    param = f"{param}.image_url.url"
    if not isinstance(url, str) or not url.startswith("data:"):
        raise InvalidRequest(
            f"'{param}': Ollama accepts only inline images (data: URLs with base64 data), "
            "not image URLs",
            param=param,
        )
    header, sep, data = url.partition(",")
    if not sep or not header.endswith(";base64"):
        raise InvalidRequest(f"'{param}': the data: URL must be base64-encoded", param=param)
    return data


def _user(message: dict[str, Any], param: str) -> dict[str, Any]:
    content = message.get("content")
    if not isinstance(content, list):
        return {"role": "user", "content": text_of(content, param)}
    texts: list[str] = []
    images: list[str] = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            texts.append(str(part.get("text") or ""))
        elif kind == "image_url":
            images.append(_image(part, f"{param}[{j}]"))
        else:
            raise InvalidRequest(
                f"'{param}[{j}]': part type {kind!r} is not supported by Ollama",
                param=f"{param}[{j}]",
            )
    out: dict[str, Any] = {"role": "user", "content": "\n".join(texts)}
    if images:
        out["images"] = images
    return out


def _assistant(message: dict[str, Any], base: str, names: dict[str, str]) -> dict[str, Any]:
    content = text_of(message.get("content"), f"{base}.content")
    out: dict[str, Any] = {"role": "assistant", "content": content}
    calls = []
    for j, call in enumerate(message.get("tool_calls") or []):
        function = call.get("function") if isinstance(call, dict) else None
        where = f"{base}.tool_calls[{j}].function"
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise InvalidRequest(f"'{where}.name' is required", param=f"{where}.name")
        try:
            arguments = orjson.loads(function.get("arguments") or "{}")
        except (orjson.JSONDecodeError, TypeError):
            arguments = None
        if not isinstance(arguments, dict):
            raise InvalidRequest(
                f"'{where}.arguments' must be a JSON object", param=f"{where}.arguments"
            )
        if isinstance(call.get("id"), str):
            names[call["id"]] = function["name"]
        calls.append({"function": {"name": function["name"], "arguments": arguments}})
    if calls:
        out["tool_calls"] = calls
    return out


def messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    """OpenAI ``messages`` as Ollama messages (see the module docstring)."""
    raw = body.get("messages")
    if not isinstance(raw, list):
        raise InvalidRequest("'messages' must be an array", param="messages")
    names: dict[str, str] = {}
    out: list[dict[str, Any]] = []
    for i, message in enumerate(raw):
        if not isinstance(message, dict):
            raise InvalidRequest(f"'messages[{i}]' must be an object", param=f"messages[{i}]")
        role = message.get("role")
        param = f"messages[{i}].content"
        if role in ("system", "developer"):
            out.append({"role": "system", "content": text_of(message.get("content"), param)})
        elif role == "user":
            out.append(_user(message, param))
        elif role == "assistant":
            out.append(_assistant(message, f"messages[{i}]", names))
        elif role == "tool":
            tool: dict[str, Any] = {
                "role": "tool",
                "content": text_of(message.get("content"), param),
            }
            name = names.get(str(message.get("tool_call_id")))
            if name is not None:
                tool["tool_name"] = name
            out.append(tool)
        else:
            raise InvalidRequest(
                f"role {role!r} is not supported by Ollama", param=f"messages[{i}].role"
            )
    return out


def chat_request(body: dict[str, Any], deployment: ModelDeployment, stream: bool) -> dict[str, Any]:
    """The ``/api/chat`` body for an OpenAI chat body (``drop_params`` applied)."""
    body = apply_policy(body, _supported(body), deployment)
    out: dict[str, Any] = {"model": body["model"], "messages": messages(body), "stream": stream}
    if body.get("tools") and body.get("tool_choice") != "none":
        out["tools"] = body["tools"]
    options = {k: body[k] for k in _OPTIONS if body.get(k) is not None}
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    if max_tokens is not None:
        options["num_predict"] = max_tokens
    stop = body.get("stop")
    if stop:
        options["stop"] = [stop] if isinstance(stop, str) else list(stop)
    if options:
        out["options"] = options
    response_format = body.get("response_format")
    if isinstance(response_format, dict):
        if response_format.get("type") == "json_object":
            out["format"] = "json"
        elif response_format.get("type") == "json_schema":
            spec = response_format.get("json_schema")
            schema = spec.get("schema") if isinstance(spec, dict) else None
            if not isinstance(schema, dict):
                raise InvalidRequest(
                    "'response_format.json_schema.schema' is required",
                    param="response_format.json_schema.schema",
                )
            out["format"] = schema
    return out


def http_error(dep: str, status: int, headers: Mapping[str, str], body: bytes) -> GatewayError:
    """An Ollama error answer (``{"error": "..."}``) as a gateway error: by status, except
    404 ``model "x" not found``, which is the deployment's misconfiguration (code
    ``upstream_model_not_found``; retryable, another deployment may serve the alias)."""
    error = error_from_response(dep, status, headers, body)
    if status == 404 and "model" in error.message and "not found" in error.message:
        return UpstreamError(error.message, code="upstream_model_not_found")
    return error


def finish_reason(done_reason: Any, has_tool_calls: bool) -> str:
    if done_reason == "length":
        return "length"
    return "tool_calls" if has_tool_calls else "stop"


def usage(data: dict[str, Any]) -> Usage:
    prompt, completion = data.get("prompt_eval_count") or 0, data.get("eval_count") or 0
    if not isinstance(prompt, int) or not isinstance(completion, int):
        raise UpstreamProtocolError("Ollama sent non-integer token counts")
    return openai_shapes.usage(prompt, completion)


def _message(dep: str, data: dict[str, Any]) -> dict[str, Any]:
    message = data.get("message", {})
    if not isinstance(message, dict):
        raise UpstreamProtocolError(f"deployment {dep} sent a message that is not an object")
    return message


def tool_calls(dep: str, message: dict[str, Any]) -> list[dict[str, Any]]:
    """Ollama's ``message.tool_calls`` as OpenAI tool calls."""
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list):
        raise UpstreamProtocolError(f"deployment {dep} sent malformed tool_calls")
    out = []
    for call in calls:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise UpstreamProtocolError(f"deployment {dep} sent a tool call without a name")
        arguments = function.get("arguments", {})
        text = arguments if isinstance(arguments, str) else orjson.dumps(arguments).decode()
        call_id = call.get("id")
        if not isinstance(call_id, str) or not call_id:
            call_id = openai_shapes.new_call_id()
        out.append(openai_shapes.tool_call(call_id, function["name"], text))
    return out


def completion(dep: str, data: dict[str, Any], model: str) -> Completion:
    """A non-streamed ``/api/chat`` answer as a ``chat.completion``."""
    message = _message(dep, data)
    content = message.get("content") or ""
    if not isinstance(content, str):
        raise UpstreamProtocolError(f"deployment {dep} sent non-text content")
    calls = tool_calls(dep, message)
    finish = finish_reason(data.get("done_reason"), bool(calls))
    totals = usage(data)
    response = openai_shapes.completion(
        model=str(data["model"]) if isinstance(data.get("model"), str) else model,
        content=content if content or not calls else None,
        finish_reason=finish,
        usage=totals,
        tool_calls=calls,
    )
    return Completion(response=response, usage=totals, finish_reason=finish)


class StreamTranslator:
    """Turns the NDJSON objects of one ``/api/chat`` stream into ``chat.completion.chunk`` s.

    ``feed`` each parsed line in order; after the ``done: true`` line ``done`` is True
    and the finish and usage chunks have been returned."""

    def __init__(self, dep: str, model: str) -> None:
        self._dep = dep
        self._chunks = ChunkBuilder(model)
        self._started = False
        self._tools = 0
        self.done = False

    def feed(self, data: dict[str, Any]) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        if not self._started:
            self._started = True
            out.append(self._chunks.role())
        message = _message(self._dep, data)
        content = message.get("content")
        if isinstance(content, str) and content:
            out.append(self._chunks.content(content))
        for call in tool_calls(self._dep, message):
            function = call["function"]
            out.append(
                self._chunks.tool_start(
                    self._tools, call["id"], function["name"], function["arguments"]
                )
            )
            self._tools += 1
        if data.get("done") is True:
            self.done = True
            out.append(self._chunks.finish(finish_reason(data.get("done_reason"), self._tools > 0)))
            out.append(self._chunks.usage(usage(data)))
        return out


def embed_request(body: dict[str, Any], deployment: ModelDeployment) -> dict[str, Any]:
    """The ``/api/embed`` body for an OpenAI embeddings body (``drop_params`` applied)."""
    body = apply_policy(body, EMBED_PARAMS, deployment)
    raw = body.get("input")
    if not (
        isinstance(raw, str) or (isinstance(raw, list) and all(isinstance(i, str) for i in raw))
    ):
        raise InvalidRequest(
            "'input' must be a string or an array of strings (Ollama takes no token arrays)",
            param="input",
        )
    if body.get("encoding_format") not in (None, "float", "base64"):
        raise InvalidRequest(
            "'encoding_format' must be 'float' or 'base64'", param="encoding_format"
        )
    out: dict[str, Any] = {"model": body["model"], "input": raw}
    if body.get("dimensions") is not None:
        out["dimensions"] = body["dimensions"]
    return out


def embeddings(dep: str, data: dict[str, Any], body: dict[str, Any]) -> Completion:
    """An ``/api/embed`` answer as an OpenAI embeddings list (base64 when asked for)."""
    vectors = data.get("embeddings")
    if not isinstance(vectors, list) or not all(isinstance(v, list) for v in vectors):
        raise UpstreamProtocolError(f"deployment {dep} answered without embeddings")
    as_base64 = body.get("encoding_format") == "base64"

    def encode(vector: list[float]) -> Any:
        if not as_base64:
            return vector
        try:
            return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        except struct.error:
            raise UpstreamProtocolError(f"deployment {dep} sent a non-numeric vector") from None

    tokens = data.get("prompt_eval_count") or 0
    if not isinstance(tokens, int):
        raise UpstreamProtocolError(f"deployment {dep} sent a non-integer prompt_eval_count")
    model = data.get("model")
    response = {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": encode(v)}
            for i, v in enumerate(vectors)
        ],
        "model": model if isinstance(model, str) else body["model"],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return Completion(
        response=response,
        usage=Usage(prompt_tokens=tokens, completion_tokens=0, total_tokens=tokens),
        finish_reason=None,
    )
