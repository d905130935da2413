"""Translation rules from OpenAI chat/embeddings bodies to the Gemini API, and Gemini
error answers to gateway errors.

Requests (:func:`chat_request`, :func:`embed_request`):

* messages -> ``contents`` (roles ``user``/``model``, consecutive same-role contents
  merged, as Gemini wants turns to alternate): ``system``/``developer`` ->
  ``systemInstruction.parts``; user text -> ``text`` parts; ``data:`` image URLs
  (and ``input_audio``, and ``file`` parts with ``file_data``) -> ``inlineData
  {mimeType, data}``; ``http(s)`` image URLs -> ``fileData {mimeType (guessed from the
  name, when it can be), fileUri}``; assistant text and ``tool_calls`` -> ``model``
  parts ``functionCall {id, name, args}`` (``id`` is documented by the API reference);
  ``tool`` messages -> ``user`` parts ``functionResponse {id, name, response}``, the
  name looked up by ``tool_call_id`` among the earlier calls, ``response`` the
  content's JSON object, else ``{"content": <text>}``.
* ``tools`` -> ``tools: [{functionDeclarations: [{name, description,
  parametersJsonSchema}]}]``: OpenAI parameters are JSON Schema, which
  ``parametersJsonSchema`` takes as is (``parameters`` takes only Google's OpenAPI
  subset and refuses e.g. ``additionalProperties``). ``tool_choice`` ->
  ``toolConfig.functionCallingConfig``: ``auto`` AUTO, ``required`` ANY, ``none`` NONE,
  a named function ANY with ``allowedFunctionNames``.
* ``generationConfig``: ``temperature``, ``topP``, ``maxOutputTokens``
  (``max_completion_tokens`` or ``max_tokens``), ``stopSequences`` (``stop``),
  ``candidateCount`` (``n``; a stream has one candidate, so ``n`` > 1 on a stream is an
  unsupported parameter), ``seed``, ``presencePenalty``, ``frequencyPenalty``, and
  ``response_format``: ``json_object`` -> ``responseMimeType: application/json``,
  ``json_schema`` -> that plus ``responseJsonSchema`` (JSON Schema as is).
* Embeddings: ``input`` (a string or strings) -> ``batchEmbedContents`` ``requests:
  [{model: "models/<model>", content: {parts: [{text}]}, outputDimensionality}]``.

Errors (:func:`http_error`): ``{"error": {"code", "message", "status", "details"}}``.
The canonical status decides: ``INVALID_ARGUMENT``/``FAILED_PRECONDITION`` (and 413)
-> :class:`UpstreamBadRequest`, except a key Google calls ``API_KEY_INVALID`` (a 400)
which, like ``UNAUTHENTICATED``/``PERMISSION_DENIED``, is :class:`UpstreamAuthFailed`;
``NOT_FOUND`` is the deployment's misconfiguration (:class:`UpstreamError`, code
``upstream_model_not_found``); ``RESOURCE_EXHAUSTED`` -> :class:`UpstreamRateLimited`
with the ``google.rpc.RetryInfo`` ``retryDelay`` as ``retry_after``; ``UNAVAILABLE``
-> :class:`UpstreamUnavailable`; ``DEADLINE_EXCEEDED`` -> :class:`UpstreamTimeout`;
anything else by HTTP status.
"""

from __future__ import annotations

import mimetypes
import re
from collections.abc import Mapping
from typing import Any, Final

import orjson

from services.runtime.errors import (
    GatewayError,
    InvalidRequest,
    UpstreamAuthFailed,
    UpstreamBadRequest,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
    upstream_error_for_status,
)
from services.runtime.settings import ModelDeployment
from services.workers.params import apply_policy
from services.workers.parsing import text_of
from services.workers.upstream_errors import parse_retry_after

CHAT_PARAMS: Final = frozenset(
    {
        "temperature",
        "top_p",
        "max_tokens",
        "max_completion_tokens",
        "stop",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "tools",
    }
)
EMBED_PARAMS: Final = frozenset({"input", "dimensions", "encoding_format"})
_FORMATS: Final = frozenset({"text", "json_object", "json_schema"})
_MODES: Final = {"auto": "AUTO", "required": "ANY", "none": "NONE"}
_AUDIO: Final = {"wav": "audio/wav", "mp3": "audio/mp3"}
_DELAY: Final = re.compile(r"(\d+(?:\.\d+)?)s")


def model_name(body: Mapping[str, Any], deployment: ModelDeployment) -> str:
    """The upstream model id, without Google's ``models/`` prefix."""
    model = body.get("model") or deployment.model
    return str(model).removeprefix("models/")


def _supported(body: dict[str, Any], stream: bool) -> frozenset[str]:
    """The parameters this request can keep: ``tool_choice``, ``response_format`` and ``n``
    count as supported only for values Gemini can express."""
    extra = set()
    choice = body.get("tool_choice")
    if (isinstance(choice, str) and choice in _MODES) or (
        isinstance(choice, dict)
        and choice.get("type") == "function"
        and isinstance((choice.get("function") or {}).get("name"), str)
    ):
        extra.add("tool_choice")
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") in _FORMATS:
        extra.add("response_format")
    if not stream or body.get("n") == 1:
        extra.add("n")
    return CHAT_PARAMS | extra


def _inline(url: str, param: str) -> dict[str, Any]:
    header, sep, data = url.partition(",")
    if not sep or not header.endswith(";base64"):
        raise InvalidRequest(f"'{param}': a data: URL must be base64-encoded", param=param)
    mime = header.removeprefix("data:").removesuffix(";base64") or "application/octet-stream"
    return {"inlineData": {"mimeType": mime, "data": data}}


def _media(part: dict[str, Any], param: str) -> dict[str, Any]:
    kind = part.get("type")
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        param = f"{param}.image_url.url"
        if isinstance(url, str) and url.startswith("data:"):
            return _inline(url, param)
        if isinstance(url, str) and url.startswith(("http://", "https://")):
            file: dict[str, Any] = {"fileUri": url}
            mime = mimetypes.guess_type(url.split("?", 1)[0])[0]
            if mime:
                file = {"mimeType": mime, **file}
            return {"fileData": file}
        raise InvalidRequest(f"'{param}' must be a data: or http(s) URL", param=param)
    if kind == "input_audio":
        audio = part.get("input_audio") or {}
        mime = _AUDIO.get(str(audio.get("format")))
        if mime is None or not isinstance(audio.get("data"), str):
            raise InvalidRequest(f"'{param}.input_audio' needs data and a wav/mp3 format")
        return {"inlineData": {"mimeType": mime, "data": audio["data"]}}
    if kind == "file":
        data = (part.get("file") or {}).get("file_data")
        if isinstance(data, str) and data.startswith("data:"):
            return _inline(data, f"{param}.file.file_data")
        raise InvalidRequest(
            f"'{param}': Gemini takes files only inline (file.file_data as a data: URL)",
            param=param,
        )
    raise InvalidRequest(f"'{param}': part type {kind!r} is not supported by Gemini", param=param)


def _user_parts(content: Any, param: str) -> list[dict[str, Any]]:
    if not isinstance(content, list):
        text = text_of(content, param)
        return [{"text": text}] if text else []
    parts = []
    for j, part in enumerate(content):
        if isinstance(part, dict) and part.get("type") == "text":
            if part.get("text"):
                parts.append({"text": str(part["text"])})
        elif isinstance(part, dict):
            parts.append(_media(part, f"{param}[{j}]"))
        else:
            raise InvalidRequest(f"'{param}[{j}]' must be an object", param=f"{param}[{j}]")
    return parts


def _call_parts(message: dict[str, Any], base: str, names: dict[str, str]) -> list[dict[str, Any]]:
    parts = []
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
        call_part: dict[str, Any] = {"name": function["name"], "args": arguments}
        if isinstance(call.get("id"), str):
            names[call["id"]] = function["name"]
            call_part = {"id": call["id"], **call_part}
        parts.append({"functionCall": call_part})
    return parts


def _response_part(message: dict[str, Any], i: int, names: dict[str, str]) -> dict[str, Any]:
    call_id = message.get("tool_call_id")
    name = names.get(str(call_id))
    if name is None:
        raise InvalidRequest(
            f"'messages[{i}].tool_call_id' {call_id!r} answers no earlier assistant tool call",
            param=f"messages[{i}].tool_call_id",
        )
    text = text_of(message.get("content"), f"messages[{i}].content")
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError:
        parsed = None
    response = parsed if isinstance(parsed, dict) else {"content": text}
    return {"functionResponse": {"id": call_id, "name": name, "response": response}}


def contents(body: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """OpenAI ``messages`` as Gemini ``contents`` and ``systemInstruction`` parts."""
    raw = body.get("messages")
    if not isinstance(raw, list):
        raise InvalidRequest("'messages' must be an array", param="messages")
    names: dict[str, str] = {}
    system: list[dict[str, Any]] = []
    turns: list[tuple[str, list[dict[str, Any]]]] = []
    for i, message in enumerate(raw):
        if not isinstance(message, dict):
            raise InvalidRequest(f"'messages[{i}]' must be an object", param=f"messages[{i}]")
        role = message.get("role")
        param = f"messages[{i}].content"
        if role in ("system", "developer"):
            system.append({"text": text_of(message.get("content"), param)})
        elif role == "user":
            turns.append(("user", _user_parts(message.get("content"), param)))
        elif role == "assistant":
            text = text_of(message.get("content"), param)
            parts = [{"text": text}] if text else []
            turns.append(("model", parts + _call_parts(message, f"messages[{i}]", names)))
        elif role == "tool":
            turns.append(("user", [_response_part(message, i, names)]))
        else:
            raise InvalidRequest(
                f"role {role!r} is not supported by Gemini", param=f"messages[{i}].role"
            )
    merged: list[dict[str, Any]] = []
    for role, parts in turns:
        if not parts:
            continue
        if merged and merged[-1]["role"] == role:
            merged[-1]["parts"].extend(parts)
        else:
            merged.append({"role": role, "parts": list(parts)})
    return merged, system


def _tools(body: dict[str, Any]) -> list[dict[str, Any]]:
    declarations = []
    for j, tool in enumerate(body.get("tools") or []):
        function = tool.get("function") if isinstance(tool, dict) else None
        if tool.get("type", "function") != "function" or not isinstance(function, dict):
            raise InvalidRequest(
                f"'tools[{j}]': only function tools are supported by Gemini", param=f"tools[{j}]"
            )
        if not isinstance(function.get("name"), str):
            raise InvalidRequest(f"'tools[{j}].function.name' is required")
        declaration: dict[str, Any] = {"name": function["name"]}
        if function.get("description"):
            declaration["description"] = function["description"]
        if function.get("parameters") is not None:
            declaration["parametersJsonSchema"] = function["parameters"]
        declarations.append(declaration)
    return [{"functionDeclarations": declarations}] if declarations else []


def _tool_config(choice: Any) -> dict[str, Any] | None:
    if choice is None:
        return None
    if isinstance(choice, str):
        config: dict[str, Any] = {"mode": _MODES[choice]}
    else:
        config = {"mode": "ANY", "allowedFunctionNames": [choice["function"]["name"]]}
    return {"functionCallingConfig": config}


def _generation_config(body: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for ours, theirs in (
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("n", "candidateCount"),
        ("seed", "seed"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
    ):
        if body.get(ours) is not None:
            config[theirs] = body[ours]
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    if max_tokens is not None:
        config["maxOutputTokens"] = max_tokens
    stop = body.get("stop")
    if stop:
        config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    response_format = body.get("response_format")
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind in ("json_object", "json_schema"):
        config["responseMimeType"] = "application/json"
    if kind == "json_schema":
        spec = response_format.get("json_schema") if response_format else None
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise InvalidRequest(
                "'response_format.json_schema.schema' is required",
                param="response_format.json_schema.schema",
            )
        config["responseJsonSchema"] = schema
    return config


def chat_request(body: dict[str, Any], deployment: ModelDeployment, stream: bool) -> dict[str, Any]:
    """The ``generateContent`` body for an OpenAI chat body (``drop_params`` applied)."""
    body = apply_policy(body, _supported(body, stream), deployment)
    turns, system = contents(body)
    out: dict[str, Any] = {"contents": turns}
    if system:
        out["systemInstruction"] = {"parts": system}
    tools = _tools(body)
    if tools:
        out["tools"] = tools
        tool_config = _tool_config(body.get("tool_choice"))
        if tool_config is not None:
            out["toolConfig"] = tool_config
    config = _generation_config(body)
    if config:
        out["generationConfig"] = config
    return out


def embed_request(body: dict[str, Any], deployment: ModelDeployment) -> dict[str, Any]:
    """The ``batchEmbedContents`` body for an OpenAI embeddings body (``drop_params`` applied)."""
    body = apply_policy(body, EMBED_PARAMS, deployment)
    raw = body.get("input")
    inputs = [raw] if isinstance(raw, str) else raw
    if not isinstance(inputs, list) or not inputs or not all(isinstance(i, str) for i in inputs):
        raise InvalidRequest(
            "'input' must be a string or a non-empty array of strings "
            "(Gemini takes no token arrays)",
            param="input",
        )
    if body.get("encoding_format") not in (None, "float", "base64"):
        raise InvalidRequest(
            "'encoding_format' must be 'float' or 'base64'", param="encoding_format"
        )
    model = f"models/{model_name(body, deployment)}"
    requests = []
    for text in inputs:
        request: dict[str, Any] = {"model": model, "content": {"parts": [{"text": text}]}}
        if body.get("dimensions") is not None:
            request["outputDimensionality"] = body["dimensions"]
        requests.append(request)
    return {"requests": requests}


def _error_object(body: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}
    if isinstance(data, list) and data:  # the JSON-array stream wraps its error too
        data = data[0]
    error = data.get("error") if isinstance(data, dict) else None
    return error if isinstance(error, dict) else {}


def retry_delay(details: Any) -> float | None:
    """The ``retryDelay`` of a ``google.rpc.RetryInfo`` detail (``"7s"``, ``"0.5s"``)."""
    for detail in details if isinstance(details, list) else ():
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("RetryInfo"):
            found = _DELAY.fullmatch(str(detail.get("retryDelay", "")))
            if found:
                return float(found.group(1))
    return None


def _reasons(details: Any) -> set[str]:
    return {
        str(d.get("reason"))
        for d in (details if isinstance(details, list) else ())
        if isinstance(d, dict) and d.get("reason")
    }


def http_error(dep: str, status: int, headers: Mapping[str, str], body: bytes) -> GatewayError:
    """A Gemini error answer as a gateway error (see the module docstring)."""
    error = _error_object(body)
    message = error.get("message")
    if not isinstance(message, str) or not message:
        message = body[:300].decode("utf-8", "replace").strip() or "no details"
    name = str(error.get("status") or "")
    details = error.get("details")
    text = f"deployment {dep} answered {status}{' ' + name if name else ''}: {message}"
    if "API_KEY_INVALID" in _reasons(details) or name in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
        return UpstreamAuthFailed(f"the provider refused the gateway's credentials: {text}")
    if name == "RESOURCE_EXHAUSTED" or status == 429:
        retry_after = retry_delay(details)
        if retry_after is None:
            retry_after = parse_retry_after(headers)
        return UpstreamRateLimited(text, retry_after=retry_after)
    if name in ("INVALID_ARGUMENT", "FAILED_PRECONDITION", "OUT_OF_RANGE"):
        return UpstreamBadRequest(text)
    if name == "NOT_FOUND" or status == 404:
        return UpstreamError(text, code="upstream_model_not_found")
    if name == "UNAVAILABLE":
        return UpstreamUnavailable(text, retry_after=parse_retry_after(headers))
    if name == "DEADLINE_EXCEEDED":
        return UpstreamTimeout(text)
    return upstream_error_for_status(status, text, parse_retry_after(headers))
