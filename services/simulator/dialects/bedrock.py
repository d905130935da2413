"""Amazon Bedrock Runtime, as the simulator speaks it: Converse, ConverseStream and
InvokeModel for Titan Text Embeddings.

* ``POST /model/{modelId}/converse`` and ``/model/{modelId}/converse-stream``; the
  (percent-encoded) model id in the path names the model and carries the simulator
  behaviour. The stream is AWS's binary event stream
  (:mod:`services.simulator.dialects.aws_eventstream`): ``messageStart``,
  ``contentBlockStart`` (tool use only), ``contentBlockDelta`` per token or argument
  fragment, ``contentBlockStop``, ``messageStop`` and ``metadata`` (usage, metrics).
  A malformed frame is a ``contentBlockDelta`` with a wrong message CRC.
* ``POST /model/{modelId}/invoke`` with ``{"inputText", "dimensions"?, "normalize"?}``
  answers Titan Text Embeddings V2's ``{"embedding", "embeddingsByType",
  "inputTextTokenCount"}``.
* Auth: a SigV4 ``Authorization`` header (``AWS4-HMAC-SHA256 Credential=<key>/<date>/
  <region>/bedrock/aws4_request, SignedHeaders=..., Signature=<64 hex>``) with
  ``x-amz-date``, or a Bedrock API key as ``Authorization: Bearer <key>``. Only the
  shape is checked; the simulator cannot verify a secret.
* Errors: the HTTP status, ``x-amzn-ErrorType: <Type>:<namespace>`` and
  ``{"message": ...}``, as Bedrock's rest-json protocol answers.
"""

from __future__ import annotations

import re
import time
from typing import Any, Final

import orjson

from services.simulator.dialect import (
    Answer,
    Call,
    EmbedRequest,
    ErrorKind,
    Item,
    Route,
    SimError,
    SimRequest,
    SimTool,
    SimToolCall,
)
from services.simulator.dialects import aws_eventstream as es
from services.simulator.engine import call_item

_NAMESPACE: Final = "http://internal.amazon.com/coral/com.amazon.bedrock/"
_SIGV4: Final = re.compile(
    r"AWS4-HMAC-SHA256 Credential=[^/\s,]+/\d{8}/[a-z0-9-]+/bedrock/aws4_request,\s*"
    r"SignedHeaders=[a-z0-9;-]+,\s*Signature=[0-9a-f]{64}"
)
_AMZ_DATE: Final = re.compile(r"\d{8}T\d{6}Z")
_KIND_ERRORS: Final[dict[ErrorKind, tuple[int, str]]] = {
    "invalid_request": (400, "ValidationException"),
    "authentication": (403, "UnrecognizedClientException"),
    "permission": (403, "AccessDeniedException"),
    "not_found": (404, "ResourceNotFoundException"),
    "request_too_large": (400, "ValidationException"),  # Bedrock has no 413
    "rate_limit": (429, "ThrottlingException"),
    "api_error": (500, "InternalServerException"),
    "unavailable": (503, "ServiceUnavailableException"),
    "overloaded": (503, "ServiceUnavailableException"),  # Bedrock has no 529
}
_AUTH_ERRORS: Final = frozenset(
    {"MissingAuthenticationTokenException", "IncompleteSignatureException"}
)
STOP_REASONS: Final = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "stop_sequence": "stop_sequence",
}
IMAGE_FORMATS: Final = frozenset({"png", "jpeg", "gif", "webp"})
TITAN_DIMENSIONS: Final = (256, 512, 1024)
_ALTERNATE: Final = (
    "A conversation must alternate between user and assistant roles. Make sure the "
    "conversation alternates between user and assistant roles and try again."
)
_START_USER: Final = (
    "A conversation must start with a user message. Try again with a conversation that "
    "starts with a user message."
)
_NEED_TOOL_CONFIG: Final = (
    "The toolConfig field must be defined when using toolUse and toolResult content blocks."
)


def _invalid(message: str) -> SimError:
    return SimError(400, message, "invalid_request", code="ValidationException")


def _not_null(field: str) -> SimError:
    return _invalid(
        f"1 validation error detected: Value null at '{field}' failed to satisfy constraint: "
        "Member must not be null"
    )


def check_auth(call: Call) -> None:
    """Raise the 403 Bedrock answers when the request carries no usable credentials."""
    auth = call.headers.get("authorization", "")
    if not auth:
        raise SimError(
            403,
            "Missing Authentication Token",
            "authentication",
            code="MissingAuthenticationTokenException",
        )
    if auth.startswith("Bearer "):
        if auth.removeprefix("Bearer ").strip():
            return
    elif _SIGV4.fullmatch(auth) and _AMZ_DATE.fullmatch(call.headers.get("x-amz-date", "")):
        return
    raise SimError(
        403,
        "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' "
        "parameters, and the request requires an 'X-Amz-Date' header.",
        "authentication",
        code="IncompleteSignatureException",
    )


def _result_text(content: Any) -> str:
    parts = []
    for block in content if isinstance(content, list) else []:
        if isinstance(block, dict) and isinstance(block.get("text"), str):
            parts.append(block["text"])
        elif isinstance(block, dict) and "json" in block:
            parts.append(orjson.dumps(block["json"], option=orjson.OPT_SORT_KEYS).decode())
    return "\n".join(parts)


def _block_items(role: str, block: Any, where: str) -> list[Item]:
    if not isinstance(block, dict):
        raise _invalid(f"Value at '{where}' failed to satisfy constraint: Member must be a map")
    if isinstance(block.get("text"), str):
        return [Item("user" if role == "user" else "assistant", block["text"])]
    image = block.get("image")
    if isinstance(image, dict):
        fmt = image.get("format")
        if fmt not in IMAGE_FORMATS:
            raise _invalid(
                f"1 validation error detected: Value '{fmt}' at '{where}.image.format' failed "
                "to satisfy constraint: Member must satisfy enum value set: [png, jpeg, gif, webp]"
            )
        source = image.get("source")
        by_reference = isinstance(source, dict) and "s3Location" in source
        return [Item("image", "url" if by_reference else f"image/{fmt}")]
    tool_use = block.get("toolUse")
    if isinstance(tool_use, dict):
        return [call_item(str(tool_use.get("name")), tool_use.get("input") or {})]
    tool_result = block.get("toolResult")
    if isinstance(tool_result, dict):
        return [Item("result", _result_text(tool_result.get("content")))]
    return []  # documents, reasoning, cache points: not part of the echo


def _items(body: dict[str, Any]) -> tuple[list[Item], bool]:
    """The conversation as items, and whether it holds tool blocks."""
    items = [
        Item("system", block["text"])
        for block in body.get("system") or []
        if isinstance(block, dict) and isinstance(block.get("text"), str)
    ]
    messages = body.get("messages")
    if messages is None:
        raise _not_null("messages")
    if not isinstance(messages, list):
        raise _invalid("Value at 'messages' failed to satisfy constraint: Member must be a list")
    if not messages or not isinstance(messages[0], dict) or messages[0].get("role") != "user":
        raise _invalid(_START_USER)
    uses_tools = False
    previous = None
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("user", "assistant"):
            raise _invalid(
                f"1 validation error detected: Value '{role}' at 'messages.{i + 1}.member.role' "
                "failed to satisfy constraint: Member must satisfy enum value set: "
                "[user, assistant]"
            )
        if role == previous:
            raise _invalid(_ALTERNATE)
        previous = role
        content = message.get("content")
        if not isinstance(content, list):
            raise _not_null(f"messages.{i + 1}.member.content")
        for j, block in enumerate(content):
            where = f"messages.{i + 1}.member.content.{j + 1}.member"
            uses_tools = uses_tools or (
                isinstance(block, dict) and ("toolUse" in block or "toolResult" in block)
            )
            items.extend(_block_items(role, block, where))
    return items, uses_tools


def _inference(body: dict[str, Any]) -> tuple[int | None, tuple[str, ...]]:
    config = body.get("inferenceConfig") or {}
    if not isinstance(config, dict):
        raise _invalid(
            "Value at 'inferenceConfig' failed to satisfy constraint: Member must be a map"
        )
    max_tokens = config.get("maxTokens")
    if max_tokens is not None and (
        isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
    ):
        raise _invalid(
            f"1 validation error detected: Value '{max_tokens}' at 'inferenceConfig.maxTokens' "
            "failed to satisfy constraint: Member must have value greater than or equal to 1"
        )
    stops = config.get("stopSequences") or []
    return max_tokens, tuple(s for s in stops if isinstance(s, str) and s)


def _tools(body: dict[str, Any]) -> tuple[tuple[SimTool, ...], str | None]:
    config = body.get("toolConfig")
    if not isinstance(config, dict):
        return (), None
    tools = []
    for tool in config.get("tools") or []:
        spec = tool.get("toolSpec") if isinstance(tool, dict) else None
        if isinstance(spec, dict) and isinstance(spec.get("name"), str):
            schema = spec.get("inputSchema")
            tools.append(
                SimTool(spec["name"], schema.get("json") if isinstance(schema, dict) else None)
            )
    if not tools:
        raise _invalid(
            "1 validation error detected: Value '[]' at 'toolConfig.tools' failed to satisfy "
            "constraint: Member must have length greater than or equal to 1"
        )
    choice = config.get("toolChoice")
    if not isinstance(choice, dict) or "auto" in choice:
        return tuple(tools), None
    if "any" in choice:
        return tuple(tools), "required"
    named = choice.get("tool")
    name = named.get("name") if isinstance(named, dict) else None
    if not isinstance(name, str):
        raise _not_null("toolConfig.toolChoice.tool.name")
    return tuple(tools), name


def _usage(answer: Answer) -> dict[str, Any]:
    cached = answer.cached_tokens
    usage: dict[str, Any] = {
        "inputTokens": answer.prompt_tokens - cached,
        "outputTokens": answer.completion_tokens,
        "totalTokens": answer.prompt_tokens + answer.completion_tokens,
    }
    if cached:
        usage["cacheReadInputTokens"] = cached
        usage["cacheWriteInputTokens"] = 0
    return usage


def tool_use_id(call_id: str) -> str:
    """Bedrock's id style (``tooluse_...``) for the engine's call id."""
    return "tooluse_" + call_id.removeprefix("call_")


class BedrockStream:
    """The event-stream messages of one ConverseStream answer (one content block, index 0)."""

    content_type = es.CONTENT_TYPE

    def __init__(self, answer: Answer) -> None:
        self._answer = answer
        self._started = time.monotonic()

    def start(self) -> bytes:
        return es.event("messageStart", {"role": "assistant"})

    def text(self, piece: str) -> bytes:
        return es.event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": piece}})

    def tool_start(self, call: SimToolCall) -> bytes:
        start = {"toolUse": {"toolUseId": tool_use_id(call.id), "name": call.name}}
        return es.event("contentBlockStart", {"contentBlockIndex": 0, "start": start})

    def tool_arguments(self, fragment: str) -> bytes:
        delta = {"toolUse": {"input": fragment}}
        return es.event("contentBlockDelta", {"contentBlockIndex": 0, "delta": delta})

    def finish(self) -> bytes:
        answer = self._answer
        latency = int((time.monotonic() - self._started) * 1000)
        return b"".join(
            (
                es.event("contentBlockStop", {"contentBlockIndex": 0}),
                es.event("messageStop", {"stopReason": STOP_REASONS[answer.finish]}),
                es.event("metadata", {"usage": _usage(answer), "metrics": {"latencyMs": latency}}),
            )
        )

    def malformed(self) -> bytes:
        payload = orjson.dumps({"contentBlockIndex": 0, "delta": {"text": "broken "}})
        headers = {
            ":event-type": "contentBlockDelta",
            ":content-type": "application/json",
            ":message-type": "event",
        }
        return es.encode_message(headers, payload, corrupt=True)


class BedrockDialect:
    name = "bedrock"
    embeds = True
    routes: tuple[Route, ...] = (
        Route("POST", re.compile(r"/model/(?P<model>[^/]+)/converse"), "chat"),
        Route("POST", re.compile(r"/model/(?P<model>[^/]+)/converse-stream"), "stream"),
        Route("POST", re.compile(r"/model/(?P<model>[^/]+)/invoke"), "embed"),
    )

    def parse_chat(self, call: Call, body: Any) -> SimRequest:
        check_auth(call)
        if not isinstance(body, dict):
            raise _invalid("The request body must be a JSON object.")
        items, uses_tools = _items(body)
        tools, choice = _tools(body)
        if uses_tools and not tools:
            raise _invalid(_NEED_TOOL_CONFIG)
        max_tokens, stops = _inference(body)
        return SimRequest(
            model=call.params["model"],
            stream=call.route.operation == "stream",
            max_tokens=max_tokens,
            stop=stops,
            tools=tools,
            tool_choice=choice,
            items=tuple(items),
            header_behaviour=call.headers.get("x-sim-behavior"),
        )

    def complete(self, call: Call, request: SimRequest, answer: Answer) -> bytes:
        if answer.tool_call is not None:
            tool = answer.tool_call
            block: dict[str, Any] = {
                "toolUse": {
                    "toolUseId": tool_use_id(tool.id),
                    "name": tool.name,
                    "input": orjson.loads(tool.arguments or "{}"),
                }
            }
        else:
            block = {"text": answer.text}
        return orjson.dumps(
            {
                "output": {"message": {"role": "assistant", "content": [block]}},
                "stopReason": STOP_REASONS[answer.finish],
                "usage": _usage(answer),
                "metrics": {"latencyMs": 1},
            }
        )

    def stream_encoder(self, call: Call, request: SimRequest, answer: Answer) -> BedrockStream:
        return BedrockStream(answer)

    def error(self, error: SimError) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        status, type_ = _KIND_ERRORS[error.kind]
        if error.code in _AUTH_ERRORS:
            status, type_ = error.status, error.code
        headers = [
            (b"x-amzn-errortype", f"{type_}:{_NAMESPACE}".encode()),
            (b"x-amzn-requestid", b"00000000-0000-4000-8000-000000000000"),
        ]
        return status, headers, orjson.dumps({"message": error.message})

    def parse_embed(self, call: Call, body: Any) -> EmbedRequest:
        check_auth(call)
        if not isinstance(body, dict) or not isinstance(body.get("inputText"), str):
            raise _invalid(
                "Malformed input request: #: required key [inputText] not found, please "
                "reformat your input and try again."
            )
        if not body["inputText"].strip():
            raise _invalid(
                "Malformed input request: #/inputText: expected minLength: 1, actual: 0, "
                "please reformat your input and try again."
            )
        dimensions = body.get("dimensions", TITAN_DIMENSIONS[-1])
        if dimensions not in TITAN_DIMENSIONS or isinstance(dimensions, bool):
            raise _invalid(
                f"Malformed input request: #/dimensions: {dimensions} is not a valid enum "
                "value, please reformat your input and try again."
            )
        return EmbedRequest(
            model=call.params["model"],
            inputs=(body["inputText"],),
            dimensions=dimensions,
            header_behaviour=call.headers.get("x-sim-behavior"),
        )

    def embed_response(
        self, call: Call, request: EmbedRequest, vectors: list[list[float]], tokens: int
    ) -> bytes:
        vector = vectors[0]
        return orjson.dumps(
            {
                "embedding": vector,
                "embeddingsByType": {"float": vector},
                "inputTextTokenCount": tokens,
            }
        )
