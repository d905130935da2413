"""A small encoder for AWS's binary event-stream framing (``application/vnd.amazon.eventstream``).

One message on the wire::

    total length (uint32) | headers length (uint32) | prelude CRC32 (of the 8 bytes before)
    headers                                       | payload
    message CRC32 (of every byte before it, prelude and prelude CRC included)

Each header is ``name length (uint8) | name | type (uint8) | value``; only string
values (type 7: ``length (uint16) | utf-8 bytes``) are written, which is all that
Bedrock's ``:event-type``, ``:content-type``, ``:message-type`` and
``:exception-type`` headers need. All integers are big-endian.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any, Final

import orjson

CONTENT_TYPE: Final = b"application/vnd.amazon.eventstream"
_STRING: Final = 7
_PRELUDE: Final = struct.Struct(">II")
_CRC: Final = struct.Struct(">I")


def _headers(headers: dict[str, str]) -> bytes:
    out = bytearray()
    for name, value in headers.items():
        raw_name, raw_value = name.encode(), value.encode()
        out += struct.pack(">B", len(raw_name)) + raw_name
        out += struct.pack(">BH", _STRING, len(raw_value)) + raw_value
    return bytes(out)


def encode_message(headers: dict[str, str], payload: bytes, *, corrupt: bool = False) -> bytes:
    """One framed message; ``corrupt`` writes a wrong message CRC (a malformed frame)."""
    head = _headers(headers)
    prelude = _PRELUDE.pack(12 + len(head) + len(payload) + 4, len(head))
    prelude += _CRC.pack(zlib.crc32(prelude))
    body = prelude + head + payload
    crc = zlib.crc32(body)
    if corrupt:
        crc ^= 0xFFFFFFFF
    return body + _CRC.pack(crc)


def event(event_type: str, payload: dict[str, Any]) -> bytes:
    """An ``event`` message carrying ``payload`` as JSON."""
    return encode_message(
        {
            ":event-type": event_type,
            ":content-type": "application/json",
            ":message-type": "event",
        },
        orjson.dumps(payload),
    )


def exception(exception_type: str, message: str) -> bytes:
    """An ``exception`` message (a modelled error inside the stream), e.g.
    ``throttlingException`` with ``{"message": ...}``."""
    return encode_message(
        {
            ":exception-type": exception_type,
            ":content-type": "application/json",
            ":message-type": "exception",
        },
        orjson.dumps({"message": message}),
    )
