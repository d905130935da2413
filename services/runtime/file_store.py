"""The ``igw_files`` object store behind ``/v1/files``.

One object per file, named by its id, chunked by JetStream (128 KiB chunks,
so a file may be far larger than the bus's message limit); the File object
is kept in the object's headers (the layout is in :mod:`schemas.files`).
Every replica of the ingress sees the same files, and they outlive any process.

Contracts: ``put`` reads the given file from its current position to its end
(in a worker thread). ``download`` returns a temporary file, positioned at 0,
whose checksum was verified; the caller closes it. Bus failures become
``ServiceUnavailable``; an unknown file is ``None`` (or ``False`` for ``delete``).
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, cast

import nats.errors
from nats.js.api import ObjectInfo, ObjectMeta
from nats.js.errors import DigestMismatchError, NotFoundError
from nats.js.object_store import ObjectStore

from schemas import files as f
from services.runtime.errors import GatewayError, ServiceUnavailable

log = logging.getLogger("igw.ingress.files")

SPOOL_BYTES = 1024 * 1024
"""A download larger than this is spooled to disk, not memory."""


@dataclass(frozen=True, slots=True)
class StoredFile:
    file: f.FileObject
    owner: str | None
    """The uploading key's token; None for the master key or an open gateway."""
    created: float
    """Upload time with its fraction (``file.created_at`` is whole seconds)."""


class FileStore:
    def __init__(self, store: ObjectStore) -> None:
        self._store = store

    async def put(
        self,
        file_id: str,
        data: IO[bytes],
        *,
        filename: str,
        purpose: f.Purpose,
        owner: str | None,
    ) -> StoredFile:
        created = time.time()
        headers = {
            f.HEADER_PURPOSE: [purpose],
            f.HEADER_FILENAME: [filename],
            f.HEADER_CREATED_AT: [repr(created)],
        }
        if owner is not None:
            headers[f.HEADER_OWNER] = [owner]
        meta = ObjectMeta(name=file_id, description=filename, headers=headers)
        with _translated("store"):
            # nats-py reads any object with readinto() in a worker thread
            info = await self._store.put(file_id, cast(io.BufferedIOBase, data), meta=meta)
        stored = _stored(info)
        assert stored is not None
        return stored

    async def info(self, file_id: str) -> StoredFile | None:
        with _translated("read"):
            try:
                info = await self._store.get_info(file_id)
            except NotFoundError:
                return None
        return _stored(info)

    async def all(self) -> list[StoredFile]:
        with _translated("list"):
            try:
                infos = await self._store.list(ignore_deletes=True)
            except NotFoundError:  # nats-py's answer for an empty store
                return []
        return [s for s in map(_stored, infos) if s is not None]

    async def download(self, file_id: str) -> tuple[StoredFile, IO[bytes]] | None:
        spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115
        sink = cast(io.BufferedIOBase, spool)  # nats-py writes each chunk in a worker thread
        try:
            with _translated("read"):
                try:
                    result = await self._store.get(file_id, writeinto=sink)
                except NotFoundError:
                    result = None
            stored = None if result is None else _stored(result.info)
        except BaseException:
            spool.close()
            raise
        if stored is None:
            spool.close()
            return None
        spool.seek(0)
        return stored, spool

    async def delete(self, file_id: str) -> bool:
        with _translated("delete"):
            try:
                await self._store.delete(file_id)
            except NotFoundError:
                return False
        return True


@contextlib.contextmanager
def _translated(action: str) -> Iterator[None]:
    """Bus errors as gateway errors (not-found is handled by each caller)."""
    try:
        yield
    except DigestMismatchError:
        raise GatewayError("the stored file failed its checksum") from None
    except nats.errors.Error as exc:
        log.warning("could not %s a file: %r", action, exc)
        raise ServiceUnavailable("the file store is unavailable; retry shortly") from None


def _stored(info: ObjectInfo) -> StoredFile | None:
    """The File object kept in an object's headers; None for an object that has none."""
    headers = info.headers or {}

    def header(name: str) -> str | None:
        values = headers.get(name)
        return str(values[0]) if isinstance(values, list) and values else None

    purpose, filename, created = (
        header(f.HEADER_PURPOSE),
        header(f.HEADER_FILENAME),
        header(f.HEADER_CREATED_AT),
    )
    if purpose is None or filename is None or created is None:
        return None
    try:
        stamp = float(created)
        file = f.FileObject.model_validate(
            {
                "id": info.name,
                "bytes": info.size or 0,
                "created_at": int(stamp),
                "filename": filename,
                "purpose": purpose,
            }
        )
    except ValueError:  # pydantic's ValidationError is a ValueError too
        return None
    return StoredFile(file=file, owner=header(f.HEADER_OWNER), created=stamp)
