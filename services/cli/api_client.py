"""A small client for the gateway's HTTP API, on the standard library alone.

The CLI must run without the ``dev`` extra, so this is ``urllib.request``:
JSON calls, a multipart upload that streams the file from disk, and a streamed
download. Every failure leaves as one :class:`ApiError`
carrying the gateway's own message (``error.message`` of its error object).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.client import HTTPResponse
from pathlib import Path
from typing import Any

CHUNK = 64 * 1024


class ApiError(Exception):
    """A call that failed: ``status`` is the HTTP status, 0 when the gateway was not reached."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class Gateway:
    base: str
    key: str | None = None
    timeout: float = 30.0

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """Send ``body`` as JSON (when given) and return the decoded JSON answer."""
        data = None if body is None else json.dumps(body).encode()
        headers = {} if data is None else {"content-type": "application/json"}
        with self._open(method, path, data, headers) as reply:
            return json.loads(reply.read())

    def upload(self, path: Path, purpose: str) -> Any:
        """``POST /v1/files`` with ``path`` as the ``file`` part; returns the File object."""
        boundary = f"igw-{uuid.uuid4().hex}"
        head = _field(boundary, "purpose", purpose) + _file_head(boundary, path.name)
        tail = f"\r\n--{boundary}--\r\n".encode()
        size = len(head) + path.stat().st_size + len(tail)
        headers = {
            "content-type": f"multipart/form-data; boundary={boundary}",
            "content-length": str(size),
        }
        with self._open("POST", "/v1/files", _stream(head, path, tail), headers) as reply:
            return json.loads(reply.read())

    def stream(self, path: str) -> HTTPResponse:
        """GET ``path`` and return the open answer to read from (the caller closes it)."""
        return self._open("GET", path, None, {})

    def _open(self, method: str, path: str, data: Any, headers: dict[str, str]) -> HTTPResponse:
        if self.key:
            headers = {**headers, "authorization": f"Bearer {self.key}"}
        request = urllib.request.Request(
            self.base.rstrip("/") + path, data=data, headers=headers, method=method
        )
        try:
            reply: HTTPResponse = urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            raise ApiError(exc.code, _message(exc)) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ApiError(0, f"cannot reach {self.base}: {reason}") from None
        return reply


def _message(exc: urllib.error.HTTPError) -> str:
    detail = exc.read().decode(errors="replace")
    try:
        return str(json.loads(detail)["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return detail or str(exc.reason)


def _field(boundary: str, name: str, value: str) -> bytes:
    return (
        f'--{boundary}\r\ncontent-disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
    ).encode()


def _file_head(boundary: str, filename: str) -> bytes:
    safe = filename.replace('"', "%22").replace("\r", "").replace("\n", "")
    return (
        f"--{boundary}\r\n"
        f'content-disposition: form-data; name="file"; filename="{safe}"\r\n'
        "content-type: application/jsonl\r\n\r\n"
    ).encode()


def _stream(head: bytes, path: Path, tail: bytes) -> Iterator[bytes]:
    yield head
    with path.open("rb") as source:
        while chunk := source.read(CHUNK):
            yield chunk
    yield tail
