"""The simulator's errors in OpenAI's shape.

This module holds :class:`OpenAIError`, the exception the simulator answers with an OpenAI
error body and its HTTP status, and :func:`error_body`, which serialises
``{"error": {"message", "type", "param", "code"}}``; it sits below the request, tool and
response modules so that each of them can raise it without importing the others.
"""

from __future__ import annotations

import orjson


class OpenAIError(Exception):
    """An error answered in OpenAI's error shape."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.param = param
        self.code = code

    def body(self) -> bytes:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(
    message: str, type_: str, param: str | None = None, code: str | None = None
) -> bytes:
    return orjson.dumps(
        {"error": {"message": message, "type": type_, "param": param, "code": code}}
    )
