"""Anthropic Messages request → the OpenAI chat body the bus carries.

Rules: ``system`` becomes a system message; each user turn's ``tool_result``
blocks become ``tool`` messages placed first (OpenAI wants them right after the
assistant's calls), its other blocks one user message (text parts, images as
``image_url`` with a data: URL or the image's URL); an assistant turn's text
becomes its content and its ``tool_use`` blocks its ``tool_calls``; thinking
blocks are not forwarded. ``stop_sequences`` → ``stop``, ``metadata.user_id`` →
``user``, ``tool_choice`` any → required, tool → a named function, and
``disable_parallel_tool_use`` → ``parallel_tool_calls: false``. ``top_k`` has
no OpenAI equivalent and is dropped. Streams always ask for usage, which the
``message_delta`` event reports.
"""

from __future__ import annotations

from typing import Any

import orjson

from schemas.anthropic_messages import (
    ImageBlock,
    MessageParam,
    MessagesRequest,
    TextBlock,
    ToolResultBlock,
    ToolUseBlock,
)


def _image_part(block: ImageBlock) -> dict[str, Any]:
    source = block.source
    if source.type == "base64":
        url = f"data:{source.media_type};base64,{source.data}"
    else:
        url = source.url
    return {"type": "image_url", "image_url": {"url": url}}


def _result_text(block: ToolResultBlock) -> str:
    if isinstance(block.content, str):
        return block.content
    return "".join(b.text for b in block.content if isinstance(b, TextBlock))


def _user_messages(message: MessageParam) -> list[dict[str, Any]]:
    if isinstance(message.content, str):
        return [{"role": "user", "content": message.content}]
    out: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for block in message.content:
        if isinstance(block, ToolResultBlock):
            out.append(
                {"role": "tool", "tool_call_id": block.tool_use_id, "content": _result_text(block)}
            )
        elif isinstance(block, TextBlock):
            parts.append({"type": "text", "text": block.text})
        elif isinstance(block, ImageBlock):
            parts.append(_image_part(block))
    if parts:
        out.append({"role": "user", "content": parts})
    return out


def _assistant_message(message: MessageParam) -> dict[str, Any]:
    if isinstance(message.content, str):
        return {"role": "assistant", "content": message.content}
    text = "".join(b.text for b in message.content if isinstance(b, TextBlock))
    calls = [
        {
            "id": b.id,
            "type": "function",
            "function": {"name": b.name, "arguments": orjson.dumps(b.input).decode()},
        }
        for b in message.content
        if isinstance(b, ToolUseBlock)
    ]
    out: dict[str, Any] = {"role": "assistant", "content": text or None}
    if calls:
        out["tool_calls"] = calls
    return out


def _tool_choice(request: MessagesRequest) -> tuple[Any, bool | None]:
    choice = request.tool_choice
    if choice is None:
        return None, None
    parallel = False if choice.disable_parallel_tool_use else None
    if choice.type == "any":
        return "required", parallel
    if choice.type == "tool" and choice.name:
        return {"type": "function", "function": {"name": choice.name}}, parallel
    return choice.type if choice.type in ("auto", "none") else "auto", parallel


def to_openai(request: MessagesRequest) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    if request.system:
        system = request.system
        text = system if isinstance(system, str) else "\n".join(b.text for b in system)
        messages.append({"role": "system", "content": text})
    for message in request.messages:
        if message.role == "user":
            messages.extend(_user_messages(message))
        else:
            messages.append(_assistant_message(message))
    body: dict[str, Any] = {
        "model": request.model,
        "messages": messages,
        "max_tokens": request.max_tokens,
    }
    if request.stop_sequences:
        body["stop"] = request.stop_sequences
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.metadata is not None and request.metadata.user_id:
        body["user"] = request.metadata.user_id
    if request.tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    **({"description": t.description} if t.description else {}),
                    "parameters": t.input_schema,
                },
            }
            for t in request.tools
        ]
        choice, parallel = _tool_choice(request)
        if choice is not None:
            body["tool_choice"] = choice
        if parallel is not None:
            body["parallel_tool_calls"] = parallel
    if request.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body
