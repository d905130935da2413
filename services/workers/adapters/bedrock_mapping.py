"""Translation rules between OpenAI chat/embeddings bodies and Bedrock's Converse API.

Requests (:func:`converse_request`):

* ``system``/``developer`` messages -> ``system: [{text}]``; ``user``/``assistant`` ->
  ``messages`` with content blocks ``{text}``; ``image_url`` parts with ``data:`` URLs
  -> ``{image: {format, source: {bytes: <base64>}}}`` (png, jpeg, gif, webp; Bedrock
  takes inline bytes or S3, so http(s) URLs are a 400 naming the part); assistant
  ``tool_calls`` -> ``{toolUse: {toolUseId, name, input: <object>}}``; ``tool``
  messages -> user ``{toolResult: {toolUseId, content: [{text}]}}``. Consecutive
  messages of the same Bedrock role are merged (Converse needs alternating roles);
  empty text is left out (Converse rejects blank text blocks).
* ``inferenceConfig``: ``maxTokens`` (``max_completion_tokens`` or ``max_tokens``),
  ``temperature``, ``topP``, ``stopSequences``.
* ``tools`` -> ``toolConfig.tools[].toolSpec {name, description, inputSchema: {json}}``;
  ``tool_choice`` ``auto`` -> ``{auto: {}}``, ``required`` -> ``{any: {}}``, a named
  function -> ``{tool: {name}}``. Converse has no ``none``: the tools are left out,
  unless the conversation already holds tool calls or results (Converse then requires
  ``toolConfig``), in which case the tools are sent without a ``toolChoice``.
* Everything else goes through the ``drop_params`` policy.

Responses (:func:`completion`, :class:`StreamTranslator`): text blocks joined,
``toolUse`` -> tool calls (arguments JSON-dumped); ``stopReason`` ``end_turn`` and
``stop_sequence`` -> ``stop``, ``max_tokens`` and ``model_context_window_exceeded``
-> ``length``, ``tool_use`` -> ``tool_calls``, ``guardrail_intervened`` and
``content_filtered`` -> ``content_filter``. Usage: prompt tokens are ``inputTokens``
+ ``cacheReadInputTokens`` + ``cacheWriteInputTokens`` (Bedrock counts cache reads
and writes apart from ``inputTokens``), cached tokens are ``cacheReadInputTokens``.

Errors (:func:`error_for_type`): the ``x-amzn-ErrorType`` (HTTP) or ``:exception-type``
(stream) decides the class; an unknown type falls back to the HTTP status.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any, Final

import orjson

from schemas.openai_chat import Usage
from services.runtime.errors import (
    GatewayError,
    InvalidRequest,
    UpstreamAuthFailed,
    UpstreamBadRequest,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
    upstream_error_for_status,
)
from services.runtime.settings import ModelDeployment
from services.workers import openai_shapes
from services.workers.params import apply_policy
from services.workers.parsing import text_of
from services.workers.protocol import Completion
from services.workers.upstream_errors import parse_retry_after

CHAT_PARAMS: Final = frozenset(
    {"temperature", "top_p", "stop", "max_tokens", "max_completion_tokens", "tools", "tool_choice"}
)
FINISH: Final = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
}
IMAGE_FORMATS: Final = {
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/jpg": "jpeg",
    "image/gif": "gif",
    "image/webp": "webp",
}
_AUTH: Final = frozenset(
    {
        "AccessDeniedException",
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "IncompleteSignatureException",
        "MissingAuthenticationTokenException",
        "ExpiredTokenException",
    }
)
_RATE: Final = frozenset({"ThrottlingException", "ServiceQuotaExceededException"})
_UNAVAILABLE: Final = frozenset({"ServiceUnavailableException", "ModelNotReadyException"})
_FAILED: Final = frozenset(
    {"InternalServerException", "ModelErrorException", "ModelStreamErrorException"}
)


# -- requests ----------------------------------------------------------------------------------


def _image(part: dict[str, Any], param: str) -> dict[str, Any]:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    param = f"{param}.image_url.url"
    if not isinstance(url, str) or not url.startswith("data:"):
        raise InvalidRequest(
            f"'{param}': Bedrock takes images inline (data: URLs with base64 data) or from S3, "
            "not by URL",
            param=param,
        )
    header, sep, data = url.partition(",")
    media_type = header.removeprefix("data:").split(";")[0].lower()
    if not sep or not header.endswith(";base64"):
        raise InvalidRequest(f"'{param}': the data: URL must be base64-encoded", param=param)
    if media_type not in IMAGE_FORMATS:
        raise InvalidRequest(
            f"'{param}': Bedrock accepts png, jpeg, gif and webp images, not {media_type!r}",
            param=param,
        )
    try:
        base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(
            f"'{param}': the image data is not valid base64", param=param
        ) from None
    return {"image": {"format": IMAGE_FORMATS[media_type], "source": {"bytes": data}}}


def _user_blocks(content: Any, param: str) -> list[dict[str, Any]]:
    if not isinstance(content, list):
        text = text_of(content, param)
        return [{"text": text}] if text else []
    blocks: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if part.get("text"):
                blocks.append({"text": str(part["text"])})
        elif kind == "image_url":
            blocks.append(_image(part, f"{param}[{j}]"))
        else:
            raise InvalidRequest(
                f"'{param}[{j}]': content part type {kind!r} is not supported by Bedrock",
                param=f"{param}[{j}]",
            )
    return blocks


def _assistant_blocks(message: dict[str, Any], param: str) -> list[dict[str, Any]]:
    text = text_of(message.get("content"), f"{param}.content")
    blocks: list[dict[str, Any]] = [{"text": text}] if text else []
    for k, call in enumerate(message.get("tool_calls") or []):
        where = f"{param}.tool_calls[{k}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise InvalidRequest(f"'{where}' must be a function call with a name", param=where)
        try:
            arguments = orjson.loads(function.get("arguments") or "{}")
        except orjson.JSONDecodeError:
            raise InvalidRequest(
                f"'{where}.function.arguments' must be JSON", param=f"{where}.function.arguments"
            ) from None
        blocks.append(
            {
                "toolUse": {
                    "toolUseId": str(call.get("id")),
                    "name": function["name"],
                    "input": arguments,
                }
            }
        )
    return blocks


def _messages(messages: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    if not isinstance(messages, list):
        raise InvalidRequest("'messages' must be an array", param="messages")
    system: list[dict[str, Any]] = []
    out: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        param = f"messages[{i}]"
        role = message.get("role") if isinstance(message, dict) else None
        if role in ("system", "developer"):
            text = text_of(message.get("content"), f"{param}.content")
            if text:
                system.append({"text": text})
            continue
        if role == "user":
            blocks = _user_blocks(message.get("content"), f"{param}.content")
        elif role == "assistant":
            blocks = _assistant_blocks(message, param)
        elif role == "tool":
            result = {"text": text_of(message.get("content"), f"{param}.content")}
            tool_use_id = str(message.get("tool_call_id"))
            blocks = [{"toolResult": {"toolUseId": tool_use_id, "content": [result]}}]
        else:
            raise InvalidRequest(f"'{param}.role' {role!r} is not supported", param=f"{param}.role")
        target = "assistant" if role == "assistant" else "user"
        if not blocks:
            continue
        if out and out[-1]["role"] == target:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": target, "content": blocks})
    return system, out


def _tool_config(body: dict[str, Any], has_tool_blocks: bool) -> dict[str, Any] | None:
    tools = body.get("tools")
    if not tools:
        return None
    specs = []
    for k, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise InvalidRequest(
                f"'tools[{k}]' must be a function with a name", param=f"tools[{k}]"
            )
        spec: dict[str, Any] = {
            "name": function["name"],
            "inputSchema": {"json": function.get("parameters") or {"type": "object"}},
        }
        if function.get("description"):
            spec["description"] = function["description"]
        specs.append({"toolSpec": spec})
    config: dict[str, Any] = {"tools": specs}
    choice = body.get("tool_choice")
    if choice == "none":
        return config if has_tool_blocks else None
    if choice == "required":
        config["toolChoice"] = {"any": {}}
    elif isinstance(choice, dict):
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(name, str):
            raise InvalidRequest("'tool_choice.function.name' is required", param="tool_choice")
        config["toolChoice"] = {"tool": {"name": name}}
    elif choice == "auto":
        config["toolChoice"] = {"auto": {}}
    return config


def converse_request(body: dict[str, Any], dep: ModelDeployment) -> dict[str, Any]:
    """The Converse body for an OpenAI chat body (the model goes in the URL)."""
    body = apply_policy(body, CHAT_PARAMS, dep)
    system, messages = _messages(body.get("messages"))
    out: dict[str, Any] = {"messages": messages}
    if system:
        out["system"] = system
    config: dict[str, Any] = {}
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    if max_tokens is not None:
        config["maxTokens"] = max_tokens
    if body.get("temperature") is not None:
        config["temperature"] = body["temperature"]
    if body.get("top_p") is not None:
        config["topP"] = body["top_p"]
    stop = body.get("stop")
    if stop:
        config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    if config:
        out["inferenceConfig"] = config
    has_tool_blocks = any(
        "toolUse" in block or "toolResult" in block for m in messages for block in m["content"]
    )
    tool_config = _tool_config(body, has_tool_blocks)
    if tool_config is not None:
        out["toolConfig"] = tool_config
    return out


# -- responses ---------------------------------------------------------------------------------


def usage(dep: str, raw: Any) -> Usage:
    """OpenAI usage from Bedrock's ``TokenUsage``."""
    if not isinstance(raw, dict):
        raise UpstreamProtocolError(f"deployment {dep} sent no usage")
    counts = [raw.get(k, 0) for k in ("inputTokens", "outputTokens")]
    cache = [raw.get(k) or 0 for k in ("cacheReadInputTokens", "cacheWriteInputTokens")]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in counts + cache):
        raise UpstreamProtocolError(f"deployment {dep} sent malformed usage")
    return openai_shapes.usage(counts[0] + cache[0] + cache[1], counts[1], cached=cache[0])


def completion(dep: str, data: dict[str, Any], model: str) -> Completion:
    """The ``chat.completion`` for a Converse response."""
    output = data.get("output")
    message = output.get("message") if isinstance(output, dict) else None
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, list):
        raise UpstreamProtocolError(f"deployment {dep} answered without output.message.content")
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in content:
        if not isinstance(block, dict):
            raise UpstreamProtocolError(f"deployment {dep} sent a malformed content block")
        if isinstance(block.get("text"), str):
            texts.append(block["text"])
        tool_use = block.get("toolUse")
        if isinstance(tool_use, dict):
            arguments = orjson.dumps(tool_use.get("input") or {}).decode()
            call_id = str(tool_use.get("toolUseId") or openai_shapes.new_call_id())
            calls.append(openai_shapes.tool_call(call_id, str(tool_use.get("name")), arguments))
    finish = FINISH.get(str(data.get("stopReason")), "stop")
    totals = usage(dep, data.get("usage"))
    response = openai_shapes.completion(
        model=model,
        content="".join(texts) if texts or not calls else None,
        finish_reason=finish,
        usage=totals,
        tool_calls=calls,
    )
    return Completion(response=response, usage=totals, finish_reason=finish)


# -- errors ------------------------------------------------------------------------------------


def error_for_type(
    dep: str, error_type: str, status: int | None, message: str, retry_after: float | None = None
) -> GatewayError:
    """The gateway error for a Bedrock error type (``ThrottlingException`` or the stream's
    ``throttlingException``)."""
    name = error_type.split(":", 1)[0].rsplit("#", 1)[-1]
    name = name[:1].upper() + name[1:]
    where = f"HTTP {status}" if status is not None else "mid-stream"
    text = f"deployment {dep} answered {name} ({where}): {message[:300]}"
    if name == "ValidationException":
        return UpstreamBadRequest(text)
    if name in _AUTH:
        return UpstreamAuthFailed(f"the provider refused the gateway's credentials: {text}")
    if name == "ResourceNotFoundException":
        return UpstreamError(text, code="upstream_model_not_found")
    if name in _RATE:
        return UpstreamRateLimited(text, retry_after=retry_after)
    if name in _UNAVAILABLE:
        return UpstreamUnavailable(text, retry_after=retry_after)
    if name == "ModelTimeoutException":
        return UpstreamTimeout(text)
    if name in _FAILED or status is None:
        return UpstreamError(text)
    return upstream_error_for_status(status, text, retry_after)


def http_error(dep: str, status: int, headers: Mapping[str, str], body: bytes) -> GatewayError:
    """The gateway error for a Bedrock error answer (``x-amzn-ErrorType`` + ``{"message"}``)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    message = ""
    if isinstance(data, dict):
        message = str(data.get("message") or data.get("Message") or "")
    message = message or body[:300].decode("utf-8", "replace").strip() or "no details"
    error_type = headers.get("x-amzn-errortype") or ""
    if not error_type and isinstance(data, dict):
        error_type = str(data.get("__type") or data.get("code") or "")
    return error_for_type(dep, error_type, status, message, parse_retry_after(headers))
