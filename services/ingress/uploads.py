"""Reading a ``multipart/form-data`` upload with a size limit.

Starlette's parser spools each file part into a ``SpooledTemporaryFile`` (1 MiB
in memory, the rest on disk), so an upload of any size holds little memory.
The limit is enforced while the body streams in: a declared ``Content-Length``
over it is refused before anything is read, and a body that grows past it
stops being parsed at once.

Who closes what: the caller owns the returned form and must ``await
form.close()``; on an error nothing is left open.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

from starlette.datastructures import FormData
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from services.runtime.errors import InvalidRequest, PayloadTooLarge

FORM_OVERHEAD = 64 * 1024
"""Room for the multipart framing and the small fields around the file."""
DRAIN_LIMIT = 8 * 1024 * 1024
"""After a 413, up to this much of the rest of the body is read and dropped, so
the client (still sending) sees the answer instead of a reset connection."""


async def read_form(request: Request, max_file_bytes: int) -> FormData:
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise InvalidRequest(
            "expected a multipart/form-data body with the fields 'file' and 'purpose'",
            code="invalid_content_type",
        )
    limit = max_file_bytes + FORM_OVERHEAD
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(max_file_bytes)
    parser = MultiPartParser(
        request.headers,
        _limited(request, limit, max_file_bytes),
        max_files=1,
        max_fields=16,
        max_part_size=FORM_OVERHEAD,
    )
    try:
        return await parser.parse()
    except MultiPartException as exc:
        raise InvalidRequest(f"the multipart body is malformed: {exc.message}") from None


async def drain(request: Request, limit: int = DRAIN_LIMIT) -> None:
    """Read and drop what is left of the body, up to ``limit`` bytes."""
    read = 0
    while read <= limit:
        message = await request.receive()
        if message["type"] != "http.request":
            return
        read += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


async def _limited(
    request: Request, limit: int, max_file_bytes: int
) -> AsyncGenerator[bytes, None]:
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(max_file_bytes)
        yield chunk


def _too_large(max_file_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"the file is larger than the limit of {max_file_bytes} bytes")
