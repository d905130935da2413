"""The Files API through real NATS with the official SDK: uploads kept in the
``igw_files`` object store, batch input checked line by line, files private to
the key that uploaded them, and nothing lost when the ingress restarts."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.stack import Stack

pytestmark = pytest.mark.integration

MASTER = "sk-master-files-0123456789"
MAX_FILE = 256 * 1024


@pytest.fixture(scope="module")
def files_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root: Path = tmp_path_factory.mktemp("igw-files")
    stack = Stack(root, services=("simulator", "router", "ingress"))
    stack.overrides = {"auth": {"master_key": MASTER}, "batch": {"max_file_bytes": MAX_FILE}}
    try:
        stack.start_all()
        yield stack
    finally:
        stack.stop_all()


def new_key(stack: Stack, **fields: Any) -> str:
    return stack.new_key(MASTER, **fields)


def sdk(stack: Stack, key: str = MASTER) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key=key, max_retries=0)


def request_line(custom_id: str, model: str = "sim", **body: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": model, "messages": [{"role": "user", "content": custom_id}], **body},
    }


def jsonl(*lines: Any) -> str:
    return "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines)


def write_jsonl(path: Path, lines: list[Any]) -> Path:
    path.write_text(jsonl(*lines))
    return path


def test_upload_retrieve_download_list_delete(files_stack: Stack, tmp_path: Path) -> None:
    client = sdk(files_stack, new_key(files_stack))
    path = write_jsonl(tmp_path / "requests.jsonl", [request_line(f"r{i}") for i in range(50)])
    with path.open("rb") as upload:
        created = client.files.create(file=upload, purpose="batch")
    assert created.id.startswith("file-") and created.object == "file"
    assert created.bytes == path.stat().st_size and created.filename == "requests.jsonl"
    assert created.purpose == "batch" and created.status == "processed"
    assert created.expires_at is None and created.status_details is None

    assert client.files.retrieve(created.id) == created
    assert client.files.content(created.id).read() == path.read_bytes()
    assert [f.id for f in client.files.list()] == [created.id]
    assert [f.id for f in client.files.list(purpose="batch")] == [created.id]
    assert list(client.files.list(purpose="user_data")) == []

    deleted = client.files.delete(created.id)
    assert deleted.id == created.id and deleted.deleted and deleted.object == "file"
    with pytest.raises(openai.NotFoundError) as caught:
        client.files.retrieve(created.id)
    assert caught.value.code == "file_not_found"
    assert list(client.files.list()) == []


def test_a_file_larger_than_a_bus_message_round_trips(files_stack: Stack, tmp_path: Path) -> None:
    client = sdk(files_stack, new_key(files_stack))
    blob = bytes(range(256)) * 800  # 200 KiB: two object-store chunks, not JSONL
    (tmp_path / "blob.bin").write_bytes(blob)
    with (tmp_path / "blob.bin").open("rb") as upload:
        created = client.files.create(file=upload, purpose="user_data")
    assert created.bytes == len(blob) and created.purpose == "user_data"
    assert client.files.content(created.id).read() == blob
    empty = client.files.create(file=("empty.txt", b""), purpose="assistants")
    assert empty.bytes == 0 and client.files.content(empty.id).read() == b""


def test_a_bad_batch_file_names_its_line(files_stack: Stack, tmp_path: Path) -> None:
    limited = sdk(files_stack, new_key(files_stack, models=["sim", "sim-echo"]))
    cases = [
        (jsonl(request_line("a"), "not json"), "line 2: not valid JSON", "invalid_json_line"),
        (jsonl(request_line("a"), request_line("a")), "line 2: custom_id", "duplicate_custom_id"),
        (jsonl({**request_line("a"), "method": "GET"}), "line 1: method must be", "invalid_method"),
        (jsonl(request_line("a", model="sim-slow")), "line 1: this key may not use", None),
        (jsonl(request_line("a", messages=[])), "line 1: invalid body", None),
        ("\n", "the file holds no requests", "empty_file"),
    ]
    for text, says, code in cases:
        path = tmp_path / "bad.jsonl"
        path.write_text(text)
        with pytest.raises(openai.BadRequestError) as caught, path.open("rb") as upload:
            limited.files.create(file=upload, purpose="batch")
        assert says in caught.value.message, caught.value.message
        assert caught.value.param == "file"
        if code is not None:
            assert caught.value.code == code
    assert list(limited.files.list()) == []  # nothing was stored
    unknown = jsonl(request_line("a"), request_line("b", model="nope"))
    with pytest.raises(openai.BadRequestError) as caught:
        sdk(files_stack).files.create(file=("x.jsonl", unknown.encode()), purpose="batch")
    assert "line 2: The model `nope` does not exist" in caught.value.message
    assert caught.value.code == "model_not_found"


def test_missing_or_wrong_fields(files_stack: Stack) -> None:
    url, auth = f"{files_stack.base_url}/v1/files", {"authorization": f"Bearer {MASTER}"}
    no_purpose = httpx.post(url, headers=auth, files={"file": ("a.jsonl", b"{}")}, timeout=10)
    assert no_purpose.status_code == 400
    assert no_purpose.json()["error"]["param"] == "purpose"
    no_file = httpx.post(url, headers=auth, data={"purpose": "batch"}, files={}, timeout=10)
    assert no_file.status_code == 400  # a urlencoded body: not multipart
    only_purpose = httpx.post(
        url, headers=auth, data={"purpose": "batch"}, files={"x": ("x", b"")}, timeout=10
    )
    assert only_purpose.status_code == 400 and only_purpose.json()["error"]["param"] == "file"
    with pytest.raises(openai.BadRequestError) as caught:
        sdk(files_stack).files.create(file=("a.txt", b"hi"), purpose="fine-tune")
    assert caught.value.param == "purpose"
    for bad in ("file-doesnotexist", "not-a-file-id"):
        with pytest.raises(openai.NotFoundError) as missing:
            sdk(files_stack).files.retrieve(bad)
        assert missing.value.code == "file_not_found"
    assert httpx.get(url, headers=auth, params={"limit": 0}, timeout=10).status_code == 400
    assert httpx.get(url, headers=auth, params={"order": "up"}, timeout=10).status_code == 400


def test_a_larger_upload_gets_413(files_stack: Stack) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        sdk(files_stack).files.create(file=("big.bin", b"x" * (MAX_FILE + 1)), purpose="user_data")
    assert caught.value.status_code == 413
    assert caught.value.code == "request_too_large"
    way_over = b"x" * (MAX_FILE * 2)
    with pytest.raises(openai.APIStatusError) as declared:
        sdk(files_stack).files.create(file=("bigger.bin", way_over), purpose="user_data")
    assert declared.value.status_code == 413


def test_a_key_sees_only_its_own_files(files_stack: Stack, tmp_path: Path) -> None:
    alice, bob = new_key(files_stack), new_key(files_stack)
    viewer = new_key(files_stack, role="viewer")
    path = write_jsonl(tmp_path / "alice.jsonl", [request_line("a")])
    with path.open("rb") as upload:
        mine = sdk(files_stack, alice).files.create(file=upload, purpose="batch")
    other = sdk(files_stack, bob)
    for call in (other.files.retrieve, other.files.content, other.files.delete):
        with pytest.raises(openai.NotFoundError):
            call(mine.id)
    assert mine.id not in [f.id for f in other.files.list()]

    assert sdk(files_stack, viewer).files.retrieve(mine.id) == mine
    assert mine.id in [f.id for f in sdk(files_stack, viewer).files.list()]
    with pytest.raises(openai.PermissionDeniedError):
        sdk(files_stack, viewer).files.delete(mine.id)
    admins = sdk(files_stack).files.create(file=("admin.txt", b"x"), purpose="user_data")
    assert admins.id not in [f.id for f in sdk(files_stack, alice).files.list()]
    assert sdk(files_stack).files.content(mine.id).read() == path.read_bytes()
    assert sdk(files_stack, alice).files.delete(mine.id).deleted
    assert sdk(files_stack).files.delete(admins.id).deleted


def test_listing_pages_and_orders(files_stack: Stack) -> None:
    client = sdk(files_stack, new_key(files_stack))
    made = [client.files.create(file=(f"{i}.txt", b"x"), purpose="user_data") for i in range(3)]
    ids = [f.id for f in made]
    assert [f.id for f in client.files.list(order="asc")] == ids
    newest = client.files.list(limit=2)
    assert [f.id for f in newest.data] == ids[:0:-1] and newest.has_more
    assert [f.id for f in client.files.list(limit=1, order="asc")] == ids  # the SDK pages on
    after = client.files.list(order="asc", after=ids[0])
    assert [f.id for f in after.data] == ids[1:] and not after.has_more
    raw = httpx.get(
        f"{files_stack.base_url}/v1/files",
        headers={"authorization": f"Bearer {client.api_key}"},
        params={"limit": 1, "order": "asc"},
        timeout=10,
    ).json()
    assert raw["object"] == "list" and raw["has_more"] is True
    assert raw["first_id"] == raw["last_id"] == ids[0]


def test_an_upload_survives_an_ingress_restart(files_stack: Stack, tmp_path: Path) -> None:
    key = new_key(files_stack)
    path = write_jsonl(tmp_path / "keep.jsonl", [request_line(f"k{i}") for i in range(20)])
    with path.open("rb") as upload:
        kept = sdk(files_stack, key).files.create(file=upload, purpose="batch")
    declared_again = subprocess.run(
        [sys.executable, "-m", "services.cli", "init"],
        env=files_stack.env(),
        cwd=files_stack.root,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert declared_again.returncode == 0, declared_again.stderr.decode()
    files_stack.kill("ingress", signal.SIGTERM)
    files_stack.start("ingress")
    files_stack.wait_ready()
    client = sdk(files_stack, key)
    assert client.files.retrieve(kept.id) == kept
    assert client.files.content(kept.id).read() == path.read_bytes()
