"""The Gemini Developer API (``generativelanguage.googleapis.com``), as the simulator speaks it.

* ``POST /v1beta/models/{model}:generateContent`` and ``:streamGenerateContent``
  (SSE with ``?alt=sse``, else a JSON array), ``:embedContent`` and
  ``:batchEmbedContents``; the same under ``/v1``. The model is the path segment
  (percent-encoded; it carries the simulator behaviour after ``?``).
* Auth: an ``x-goog-api-key`` header, a ``key`` query parameter or an
  ``Authorization`` token; without one Google answers ``403 PERMISSION_DENIED``
  ("Method doesn't allow unregistered callers ..."), and so does the simulator.
* Body: ``contents`` (required, non-empty; roles ``user``/``model``; each with
  non-empty ``parts``, each part holding exactly one of ``text``, ``inlineData``
  ``{mimeType, data}``, ``fileData`` ``{fileUri}``, ``functionCall`` ``{name, args}``,
  ``functionResponse`` ``{name, response}``), ``systemInstruction``, ``tools``
  (``functionDeclarations``), ``toolConfig.functionCallingConfig`` (``mode``
  ``AUTO``/``ANY``/``NONE``/``VALIDATED``, ``allowedFunctionNames`` only with ``ANY``
  or ``VALIDATED``) and ``generationConfig`` (``maxOutputTokens``,
  ``stopSequences``...). Unknown fields are refused as Google's JSON parser refuses
  them (``Invalid JSON payload received. Unknown name ...``); camelCase and
  snake_case names are both accepted, as in the real API. A function-response turn
  must answer every function call of the model turn before it.
* Answers, streams, embeddings and error bodies: :mod:`.gemini_stream`. Errors use
  Google's canonical statuses; ``authentication`` is Google's answer to a wrong key
  (``400 INVALID_ARGUMENT``, reason ``API_KEY_INVALID``), ``request_too_large`` its
  ``400`` payload-size refusal, ``unavailable``/``overloaded`` its ``503 UNAVAILABLE``
  "The model is overloaded. Please try again later.".
"""

from __future__ import annotations

import re
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
)
from services.simulator.dialects import gemini_stream as wire
from services.simulator.engine import call_item

_PATH: Final = r"/v1(?:beta)?/models/(?P<model>[^/:]+)"
_NO_CALLER: Final = (
    "Method doesn't allow unregistered callers (callers without established identity). "
    "Please use API Key or other form of API consumer identity to call this API."
)
_KEY_INVALID: Final = "API key not valid. Please pass a valid API key."
_OVERLOADED: Final = "The model is overloaded. Please try again later."
_TOO_LARGE: Final = "Request payload size exceeds the limit: 20971520 bytes."
_ERRORS: Final[dict[ErrorKind, tuple[int, str]]] = {
    "invalid_request": (400, "INVALID_ARGUMENT"),
    "authentication": (400, "INVALID_ARGUMENT"),
    "permission": (403, "PERMISSION_DENIED"),
    "not_found": (404, "NOT_FOUND"),
    "request_too_large": (400, "INVALID_ARGUMENT"),
    "rate_limit": (429, "RESOURCE_EXHAUSTED"),
    "api_error": (500, "INTERNAL"),
    "unavailable": (503, "UNAVAILABLE"),
    "overloaded": (503, "UNAVAILABLE"),
}
_MESSAGES: Final[dict[ErrorKind, str]] = {
    "authentication": _KEY_INVALID,
    "request_too_large": _TOO_LARGE,
    "unavailable": _OVERLOADED,
    "overloaded": _OVERLOADED,
}
_TOP: Final = frozenset(
    {
        "model",
        "contents",
        "tools",
        "toolConfig",
        "safetySettings",
        "systemInstruction",
        "generationConfig",
        "cachedContent",
        "serviceTier",
        "store",
    }
)
_GENERATION: Final = frozenset(
    {
        "stopSequences",
        "responseMimeType",
        "responseSchema",
        "responseJsonSchema",
        "_responseJsonSchema",
        "responseModalities",
        "candidateCount",
        "maxOutputTokens",
        "temperature",
        "topP",
        "topK",
        "seed",
        "presencePenalty",
        "frequencyPenalty",
        "responseLogprobs",
        "logprobs",
        "enableEnhancedCivicAnswers",
        "speechConfig",
        "thinkingConfig",
        "imageConfig",
        "mediaResolution",
    }
)
_DATA: Final = frozenset(
    {
        "text",
        "inlineData",
        "fileData",
        "functionCall",
        "functionResponse",
        "executableCode",
        "codeExecutionResult",
    }
)
_PART: Final = _DATA | {"thought", "thoughtSignature", "partMetadata", "videoMetadata"}
_FUNCTION_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]{0,127}")
_MODES: Final = {"AUTO": "auto", "NONE": "none", "ANY": "required", "VALIDATED": "auto"}
_TOOL_KINDS: Final = frozenset(
    {"functionDeclarations", "googleSearch", "googleSearchRetrieval", "codeExecution", "urlContext"}
)
_DECLARATION: Final = frozenset(
    {"name", "description", "parameters", "parametersJsonSchema", "response", "responseJsonSchema"}
)


def _bad(message: str, param: str | None = None) -> SimError:
    return SimError(400, message, param=param)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word[:1].upper() + word[1:] for word in rest) if rest else name


def _fields(value: Any, where: str, known: frozenset[str]) -> dict[str, Any]:
    """An object's fields under their camelCase names; unknown names are refused."""
    if not isinstance(value, dict):
        raise _bad(f"Invalid JSON payload received. Expected an object at '{where}'.", where)
    out: dict[str, Any] = {}
    for key, item in value.items():
        name = key if key.startswith("_") else _camel(key)
        if name not in known:
            at = f" at '{where}'" if where else ""
            raise _bad(
                f'Invalid JSON payload received. Unknown name "{key}"{at}: Cannot find field.'
            )
        out[name] = item
    return out


def _check_auth(call: Call) -> None:
    headers = call.headers
    if not (headers.get("x-goog-api-key") or call.query.get("key") or headers.get("authorization")):
        raise SimError(403, _NO_CALLER, "permission")


def _texts(content: Any, where: str) -> list[str]:
    """The text parts of a ``systemInstruction`` content."""
    fields = _fields(content, where, frozenset({"role", "parts"}))
    parts = fields.get("parts")
    if not isinstance(parts, list):
        raise _bad(f"* GenerateContentRequest.{where}.parts: contents.parts must not be empty.\n")
    texts = []
    for j, part in enumerate(parts):
        text = _fields(part, f"{where}.parts[{j}]", _PART).get("text")
        if not isinstance(text, str):
            raise _bad(f"* GenerateContentRequest.{where}.parts[{j}]: a text part is required.\n")
        texts.append(text)
    return texts


def _result_text(response: Any) -> str:
    if isinstance(response, dict) and len(response) == 1:
        (value,) = response.values()
        if isinstance(value, str) and next(iter(response)) in ("content", "output", "result"):
            return value
    return orjson.dumps(response).decode()


def _part_item(part: Any, where: str, role: str) -> Item | None:
    fields = _fields(part, where, _PART)
    present = [k for k in fields if k in _DATA]
    if not present:
        raise _bad(
            f"* GenerateContentRequest.{where}.data: required oneof field 'data' must have "
            "one initialized field\n"
        )
    if len(present) > 1:
        raise _bad(
            f"Invalid JSON payload received. Oneof field 'data' is already set. "
            f"Cannot set '{present[1]}'"
        )
    kind = present[0]
    value = fields[kind]
    if kind == "text":
        if not isinstance(value, str):
            raise _bad(f"Invalid value at '{where}.text' (TYPE_STRING), {orjson.dumps(value)!r}")
        if fields.get("thought") is True:
            return None
        return Item("assistant" if role == "model" else "user", value)
    if kind == "inlineData":
        blob = _fields(value, f"{where}.inline_data", frozenset({"mimeType", "data"}))
        if not isinstance(blob.get("mimeType"), str) or not isinstance(blob.get("data"), str):
            raise _bad(
                f"* GenerateContentRequest.{where}.inline_data: mimeType and data required\n"
            )
        return Item("image", blob["mimeType"])
    if kind == "fileData":
        file = _fields(value, f"{where}.file_data", frozenset({"mimeType", "fileUri"}))
        if not isinstance(file.get("fileUri"), str) or not file["fileUri"]:
            raise _bad(f"* GenerateContentRequest.{where}.file_data.file_uri: required\n")
        return Item("image", "url")
    if kind == "functionCall":
        fc = _fields(value, f"{where}.function_call", frozenset({"id", "name", "args"}))
        if not isinstance(fc.get("name"), str) or not fc["name"]:
            raise _bad(f"* GenerateContentRequest.{where}.function_call.name: Name is empty.\n")
        if role != "model":
            raise _bad("Please ensure that function call turns come from the model.")
        args = fc.get("args", {})
        if not isinstance(args, dict):
            raise _bad(
                f"Invalid value at '{where}.function_call.args' "
                "(type.googleapis.com/google.protobuf.Struct)"
            )
        return call_item(fc["name"], args)
    if kind == "functionResponse":
        known = frozenset({"id", "name", "response", "parts", "willContinue", "scheduling"})
        fr = _fields(value, f"{where}.function_response", known)
        if not isinstance(fr.get("name"), str) or not fr["name"]:
            raise _bad(f"* GenerateContentRequest.{where}.function_response.name: Name is empty.\n")
        if not isinstance(fr.get("response"), dict):
            raise _bad(f"* GenerateContentRequest.{where}.function_response.response: required\n")
        return Item("result", _result_text(fr["response"]))
    return None  # executable code and its result: not part of the conversation text


def _contents(body: dict[str, Any]) -> list[Item]:
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        raise _bad("* GenerateContentRequest.contents: contents is not specified\n", "contents")
    items: list[Item] = []
    previous_calls = 0
    for i, content in enumerate(contents):
        where = f"contents[{i}]"
        fields = _fields(content, where, frozenset({"role", "parts"}))
        role = fields.get("role", "user")
        if role not in ("user", "model"):
            raise _bad("Please use a valid role: user, model.", f"{where}.role")
        parts = fields.get("parts")
        if not isinstance(parts, list) or not parts:
            raise _bad(
                f"* GenerateContentRequest.{where}.parts: contents.parts must not be empty.\n"
            )
        kinds = [_part_item(part, f"{where}.parts[{j}]", role) for j, part in enumerate(parts)]
        responses = sum(1 for k in kinds if k is not None and k.kind == "result")
        if responses and responses != previous_calls:
            raise _bad(
                "Please ensure that the number of function response parts is equal to the "
                "number of function call parts of the function call turn."
            )
        previous_calls = sum(1 for k in kinds if k is not None and k.kind == "call")
        items.extend(k for k in kinds if k is not None)
    return items


def _lower_types(schema: Any) -> Any:
    """Gemini ``Schema`` objects spell types in capitals (``STRING``); the engine wants JSON
    Schema's lower case."""
    if isinstance(schema, dict):
        return {
            k: (v.lower() if k == "type" and isinstance(v, str) else _lower_types(v))
            for k, v in schema.items()
        }
    if isinstance(schema, list):
        return [_lower_types(v) for v in schema]
    return schema


def _tools(body: dict[str, Any]) -> tuple[tuple[SimTool, ...], str | None]:
    raw = body.get("tools") or []
    if not isinstance(raw, list):
        raise _bad("Invalid JSON payload received. 'tools' must be a list.", "tools")
    tools: list[SimTool] = []
    for i, tool in enumerate(raw):
        declarations = _fields(tool, f"tools[{i}]", _TOOL_KINDS).get("functionDeclarations") or []
        for j, declaration in enumerate(declarations):
            where = f"tools[{i}].function_declarations[{j}]"
            fields = _fields(declaration, where, _DECLARATION)
            name = fields.get("name")
            if not isinstance(name, str) or not _FUNCTION_NAME.fullmatch(name):
                raise _bad(
                    f"* GenerateContentRequest.{where}.name: Invalid function name. Must start "
                    "with a letter or an underscore. Must be a-z, A-Z, 0-9, or contain "
                    "underscores, dots, colons and dashes, with a maximum length of 128.\n"
                )
            if "parameters" in fields and "parametersJsonSchema" in fields:
                raise _bad(f"* {where}: parameters and parameters_json_schema are exclusive.\n")
            schema = fields.get("parametersJsonSchema", _lower_types(fields.get("parameters")))
            tools.append(SimTool(name, schema))
    return tuple(tools), _tool_choice(body)


def _tool_choice(body: dict[str, Any]) -> str | None:
    config = body.get("toolConfig")
    if config is None:
        return None
    known = frozenset({"functionCallingConfig", "retrievalConfig"})
    calling = _fields(config, "tool_config", known).get("functionCallingConfig")
    if calling is None:
        return None
    fields = _fields(
        calling, "tool_config.function_calling_config", frozenset({"mode", "allowedFunctionNames"})
    )
    mode = fields.get("mode", "AUTO")
    if mode == "MODE_UNSPECIFIED":
        mode = "AUTO"
    if mode not in _MODES:
        raise _bad(
            f"Invalid value at 'tool_config.function_calling_config.mode' "
            "(type.googleapis.com/google.ai.generativelanguage.v1beta."
            f'FunctionCallingConfig.Mode), "{mode}"'
        )
    names = fields.get("allowedFunctionNames")
    if names:
        if mode not in ("ANY", "VALIDATED"):
            raise _bad(
                "* GenerateContentRequest.tool_config.function_calling_config."
                "allowed_function_names: only allowed when mode is ANY or VALIDATED.\n"
            )
        if mode == "ANY" and isinstance(names, list) and len(names) == 1:
            return str(names[0])
    return _MODES[str(mode)]


def _generation(body: dict[str, Any]) -> tuple[int | None, tuple[str, ...]]:
    config = _fields(body.get("generationConfig") or {}, "generation_config", _GENERATION)
    max_tokens = config.get("maxOutputTokens")
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int)):
        raise _bad(
            "Invalid value at 'generation_config.max_output_tokens' (TYPE_INT32), "
            f"{orjson.dumps(max_tokens).decode()}"
        )
    stops = config.get("stopSequences") or []
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise _bad("Invalid value at 'generation_config.stop_sequences' (TYPE_STRING)")
    if len(stops) > 5:
        raise _bad("* GenerateContentRequest.generation_config.stop_sequences: at most 5.\n")
    temperature = config.get("temperature")
    if isinstance(temperature, int | float) and not 0 <= temperature <= 2:
        raise _bad("* GenerateContentRequest.generation_config.temperature: must be in [0, 2].\n")
    if config.get("responseSchema") is not None and config.get("responseJsonSchema") is not None:
        raise _bad("response_schema and response_json_schema are mutually exclusive.")
    return (max_tokens if max_tokens else None), tuple(stops)


def parse_gemini_chat(call: Call, body: Any) -> SimRequest:
    _check_auth(call)
    fields = _fields(body, "", _TOP)
    items: list[Item] = []
    if fields.get("systemInstruction") is not None:
        items.extend(
            Item("system", t) for t in _texts(fields["systemInstruction"], "system_instruction")
        )
    items.extend(_contents(fields))
    tools, choice = _tools(fields)
    max_tokens, stops = _generation(fields)
    return SimRequest(
        model=call.params["model"],
        stream=call.route.operation == "stream",
        include_usage=True,
        max_tokens=max_tokens,
        stop=stops,
        tools=tools,
        tool_choice=choice,
        items=tuple(items),
        header_behaviour=call.headers.get("x-sim-behavior") or call.headers.get("x-sim-behaviour"),
        extra={"sse": call.query.get("alt") == "sse"},
    )


_EMBED: Final = frozenset(
    {"model", "content", "taskType", "title", "outputDimensionality", "embedContentConfig"}
)


def _embed_text(request: Any, where: str) -> tuple[str, int | None]:
    fields = _fields(request, where, _EMBED)
    content = fields.get("content")
    if content is None:
        raise _bad(f"* {where}.content: content is not specified\n")
    texts = _texts(content, f"{where}.content")
    dimensions = fields.get("outputDimensionality")
    if dimensions is not None and (not isinstance(dimensions, int) or dimensions < 1):
        raise _bad(f"* {where}.output_dimensionality: must be a positive integer\n")
    return " ".join(texts), dimensions


def parse_gemini_embed(call: Call, body: Any) -> EmbedRequest:
    """``embedContent`` (one content) or ``batchEmbedContents`` (``requests``, each naming
    the same ``models/{model}`` as the path)."""
    _check_auth(call)
    model = call.params["model"]
    batch = call.route.pattern.pattern.endswith("batchEmbedContents")
    if batch:
        requests = _fields(body, "", frozenset({"requests"})).get("requests")
        if not isinstance(requests, list) or not requests:
            raise _bad("* BatchEmbedContentsRequest.requests: requests is not specified\n")
        inputs, dims = [], None
        for i, request in enumerate(requests):
            name = request.get("model") if isinstance(request, dict) else None
            if name != f"models/{model}":
                raise _bad(
                    f"* BatchEmbedContentsRequest.requests[{i}].model: the model of every "
                    f"request must be the model of the batch (models/{model}).\n"
                )
            text, dims = _embed_text(request, f"requests[{i}]")
            inputs.append(text)
    else:
        text, dims = _embed_text(body, "EmbedContentRequest")
        inputs = [text]
    return EmbedRequest(
        model=model,
        inputs=tuple(inputs),
        dimensions=dims,
        header_behaviour=call.headers.get("x-sim-behavior") or call.headers.get("x-sim-behaviour"),
        extra={"batch": batch},
    )


class GeminiDialect:
    name = "gemini"
    embeds = True
    routes: tuple[Route, ...] = (
        Route("POST", re.compile(_PATH + ":generateContent"), "chat"),
        Route("POST", re.compile(_PATH + ":streamGenerateContent"), "stream"),
        Route("POST", re.compile(_PATH + ":embedContent"), "embed"),
        Route("POST", re.compile(_PATH + ":batchEmbedContents"), "embed"),
    )

    def parse_chat(self, call: Call, body: Any) -> SimRequest:
        return parse_gemini_chat(call, body)

    def complete(self, call: Call, request: SimRequest, answer: Answer) -> bytes:
        return wire.completion(answer)

    def stream_encoder(self, call: Call, request: SimRequest, answer: Answer) -> wire.GeminiStream:
        return wire.GeminiStream(answer, sse=bool(request.extra.get("sse")))

    def error(self, error: SimError) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        status, name = _ERRORS[error.kind]
        if error.kind == "invalid_request" and error.status != 400:
            status = error.status
        message = _MESSAGES.get(error.kind, error.message)
        details: list[dict[str, Any]] = []
        if error.kind == "authentication":
            details.append(
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "API_KEY_INVALID",
                    "domain": "googleapis.com",
                    "metadata": {"service": "generativelanguage.googleapis.com"},
                }
            )
        elif error.kind == "rate_limit":
            details.append(
                {
                    "@type": "type.googleapis.com/google.rpc.Help",
                    "links": [
                        {
                            "description": "Learn more about Gemini API quotas",
                            "url": "https://ai.google.dev/gemini-api/docs/rate-limits",
                        }
                    ],
                }
            )
            details.append(wire.retry_info(error.retry_after or 1.0))
        elif error.param is not None:
            details.append(
                {
                    "@type": "type.googleapis.com/google.rpc.BadRequest",
                    "fieldViolations": [{"field": error.param, "description": error.message}],
                }
            )
        return status, [], wire.error_body(status, name, message, details)

    def parse_embed(self, call: Call, body: Any) -> EmbedRequest:
        return parse_gemini_embed(call, body)

    def embed_response(
        self, call: Call, request: EmbedRequest, vectors: list[list[float]], tokens: int
    ) -> bytes:
        if request.extra.get("batch"):
            return wire.batch_embedding_body(vectors)
        return wire.embedding_body(vectors[0])
