"""OpenAI Files API wire models (``/v1/files``) and how a file is stored.

A file is one object in the ``igw_files`` JetStream object store, named by its
id. Its File object lives in that object's own meta headers, so the content
and its metadata are written together and can never disagree:

==================  ==============================================================
header              value
==================  ==============================================================
``Igw-Purpose``     the purpose given at upload
``Igw-Filename``    the uploaded file's name
``Igw-Created-At``  epoch seconds, with a fraction (the API shows whole seconds)
``Igw-Owner``       the uploading key's token; absent for the master key or an
                    open gateway (then only admins and viewers see the file)
==================  ==============================================================

Header values are lists of strings, as NATS headers are, so other NATS
clients (the ``nats`` CLI, nats.go) read the same meta. The size is the
object's own.
"""

from __future__ import annotations

import re
from typing import Final, Literal

from pydantic import BaseModel

Purpose = Literal["assistants", "batch", "batch_output", "user_data"]
UPLOAD_PURPOSES: Final[tuple[Purpose, ...]] = ("batch", "user_data", "assistants")
"""What a client may upload; only ``batch`` files are checked (as batch input)."""

FILE_ID: Final = re.compile(r"^file-[A-Za-z0-9]{1,64}$")

HEADER_PURPOSE: Final = "Igw-Purpose"
HEADER_FILENAME: Final = "Igw-Filename"
HEADER_CREATED_AT: Final = "Igw-Created-At"
HEADER_OWNER: Final = "Igw-Owner"


class FileObject(BaseModel):
    """OpenAI's File object."""

    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: Purpose
    status: Literal["uploaded", "processed", "error"] = "processed"
    expires_at: int | None = None
    status_details: str | None = None


class FileList(BaseModel):
    """``GET /v1/files``: a cursor page (``after`` = ``last_id`` for the next one)."""

    object: Literal["list"] = "list"
    data: list[FileObject]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool = True
