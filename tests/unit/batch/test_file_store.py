"""The file store's contract over an in-memory stand-in for nats-py's ObjectStore:
the File object kept in the object's headers, not-found as None, bus errors as 503."""

from __future__ import annotations

import io
from typing import Any, cast

import nats.errors
import pytest
from nats.js.api import ObjectInfo, ObjectMeta
from nats.js.errors import DigestMismatchError, NotFoundError, ObjectNotFoundError
from nats.js.object_store import ObjectStore

from schemas import files as f
from services.runtime.errors import GatewayError, ServiceUnavailable
from services.runtime.file_store import FileStore, _stored


class MemoryObjects:
    """The part of ``ObjectStore`` the file store uses, kept in a dict."""

    def __init__(self) -> None:
        self.objects: dict[str, tuple[ObjectInfo, bytes]] = {}
        self.fail: Exception | None = None

    def _check(self) -> None:
        if self.fail is not None:
            raise self.fail

    async def put(self, name: str, data: Any, meta: ObjectMeta) -> ObjectInfo:
        self._check()
        content = data.read()
        info = ObjectInfo(
            name=name, bucket="igw_files", nuid="n", size=len(content), headers=meta.headers
        )
        self.objects[name] = (info, content)
        return info

    async def get_info(self, name: str) -> ObjectInfo:
        self._check()
        if name not in self.objects:
            raise ObjectNotFoundError
        return self.objects[name][0]

    async def get(self, name: str, writeinto: Any) -> Any:
        info = await self.get_info(name)
        writeinto.write(self.objects[name][1])
        return ObjectStore.ObjectResult(info=info)

    async def list(self, ignore_deletes: bool = False) -> list[ObjectInfo]:
        self._check()
        if not self.objects:
            raise NotFoundError
        return [info for info, _ in self.objects.values()]

    async def delete(self, name: str) -> None:
        await self.get_info(name)
        del self.objects[name]


def store() -> tuple[FileStore, MemoryObjects]:
    objects = MemoryObjects()
    return FileStore(cast(ObjectStore, objects)), objects


async def test_put_keeps_the_file_object_in_headers() -> None:
    files, objects = store()
    stored = await files.put(
        "file-abc", io.BytesIO(b"hello"), filename="a.jsonl", purpose="batch", owner="tok"
    )
    assert stored.owner == "tok" and stored.file.bytes == 5 and stored.file.purpose == "batch"
    headers = objects.objects["file-abc"][0].headers
    assert headers is not None
    assert headers[f.HEADER_OWNER] == ["tok"] and headers[f.HEADER_FILENAME] == ["a.jsonl"]
    assert all(isinstance(v, list) for v in headers.values())  # NATS header shape
    assert await files.info("file-abc") == stored
    found = await files.download("file-abc")
    assert found is not None and found[1].read() == b"hello"
    found[1].close()
    admin = await files.put(
        "file-def", io.BytesIO(b""), filename="b", purpose="user_data", owner=None
    )
    assert admin.owner is None and f.HEADER_OWNER not in (
        objects.objects["file-def"][0].headers or {}
    )
    assert {s.file.id for s in await files.all()} == {"file-abc", "file-def"}


async def test_unknown_files_and_an_empty_store() -> None:
    files, _ = store()
    assert await files.info("file-nope") is None
    assert await files.download("file-nope") is None
    assert await files.delete("file-nope") is False
    assert await files.all() == []


async def test_objects_without_igw_headers_are_not_files() -> None:
    bare = ObjectInfo(name="x", bucket="igw_files", nuid="n", size=1, headers=None)
    assert _stored(bare) is None
    wrong = ObjectInfo(
        name="x",
        bucket="igw_files",
        nuid="n",
        size=1,
        headers={
            f.HEADER_PURPOSE: ["fine-tune"],
            f.HEADER_FILENAME: ["a"],
            f.HEADER_CREATED_AT: ["1.5"],
        },
    )
    assert _stored(wrong) is None


async def test_bus_errors_are_service_unavailable() -> None:
    files, objects = store()
    objects.fail = nats.errors.TimeoutError()
    with pytest.raises(ServiceUnavailable):
        await files.info("file-abc")
    with pytest.raises(ServiceUnavailable):
        await files.put("file-abc", io.BytesIO(b"x"), filename="a", purpose="batch", owner=None)
    objects.fail = DigestMismatchError()
    with pytest.raises(GatewayError, match="checksum") as caught:
        await files.download("file-abc")
    assert caught.value.status == 500
