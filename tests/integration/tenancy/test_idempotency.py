"""Idempotency-Key through real NATS, with two ingress processes: a repeat gets
the original answer (or joins it while it runs, on either replica), reaches the
provider once and is billed once; a repeat with another body is refused; a
failed original is not kept; callers never share keys; a repeat takes over an
original whose ingress died."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.stack import SERVICES, Stack, sim_model
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

MASTER = "sk-master-idempotency-0123456789"
USER: list[Any] = [{"role": "user", "content": "hello"}]
REPLAYED = "x-idempotent-replayed"


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root: Path = tmp_path_factory.mktemp("igw-idempotency")
    stack = Stack(root, services=(*SERVICES, "ingress-2"))
    stack.extra_models = [sim_model("sim-2s", "sim?itl_ms=40&tokens=50", stack.sim_port)]
    stack.overrides = {"auth": {"master_key": MASTER}, "idempotency": {"takeover_after_s": 0.5}}
    try:
        stack.start_all()
        yield stack
    finally:
        stack.stop_all()


@pytest.fixture(scope="module")
def client(keyed: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{keyed.base_url}/v1", api_key=MASTER, max_retries=0, timeout=30)


def replica(stack: Stack) -> openai.OpenAI:
    url = f"{stack.replica_url('ingress-2')}/v1"
    return openai.OpenAI(base_url=url, api_key=MASTER, max_retries=0, timeout=30)


def fresh() -> dict[str, str]:
    return {"Idempotency-Key": f"test-{uuid.uuid4()}"}


def upstream_calls(stack: Stack) -> int:
    return int(stack.sim_stats()["requests"])


def usage_rows(stack: Stack, request_id: str, timeout: float = 30) -> int:
    """Rows for ``request_id`` once at least one arrived (usage is written asynchronously)."""
    query = f"SELECT count() FROM requests WHERE request_id = '{request_id}'"
    deadline, count = time.monotonic() + timeout, 0
    while time.monotonic() < deadline and count == 0:
        count = int(stack.sql(query)[0][0])
    return count


def post(
    stack: Stack, body: dict[str, Any], headers: dict[str, str], url: str | None = None
) -> httpx.Response:
    return httpx.post(
        f"{url or stack.base_url}/v1/chat/completions",
        json=body,
        headers={"authorization": f"Bearer {MASTER}", **headers},
        timeout=30,
    )


def test_a_repeat_gets_the_original_answer_and_is_billed_once(
    keyed: Stack, client: openai.OpenAI
) -> None:
    key = fresh()
    before = upstream_calls(keyed)
    first = client.chat.completions.with_raw_response.create(
        model="sim", messages=USER, extra_headers=key
    )
    after_first = upstream_calls(keyed)
    second = client.chat.completions.with_raw_response.create(
        model="sim", messages=USER, extra_headers=key
    )
    assert after_first == before + 1
    assert upstream_calls(keyed) == after_first
    assert REPLAYED not in first.headers and second.headers[REPLAYED] == "true"
    original, repeat = first.parse(), second.parse()
    assert repeat.id == original.id
    assert repeat.choices[0].message.content == original.choices[0].message.content
    request_id = first.headers["x-request-id"]
    assert second.headers["x-request-id"] == request_id
    assert second.headers["x-igw-deployment"] == first.headers["x-igw-deployment"]
    assert usage_rows(keyed, request_id) == 1
    assert key["Idempotency-Key"] not in keyed.logs()


def test_a_repeat_with_another_body_is_refused(keyed: Stack, client: openai.OpenAI) -> None:
    key = fresh()
    client.chat.completions.create(model="sim", messages=USER, extra_headers=key)
    with pytest.raises(openai.ConflictError) as caught:
        client.chat.completions.create(
            model="sim", messages=[{"role": "user", "content": "bye"}], extra_headers=key
        )
    error = caught.value.body
    assert isinstance(error, dict)
    assert error["code"] == "idempotency_key_reused"
    assert error["type"] == "invalid_request_error" and error["param"] is None
    assert "Idempotency-Key" in error["message"]


def test_a_repeat_joins_the_original_while_it_runs(keyed: Stack, client: openai.OpenAI) -> None:
    key = fresh()
    stats = keyed.sim_stats()

    def call(sdk: openai.OpenAI) -> Any:
        return sdk.chat.completions.with_raw_response.create(
            model="sim-3s", messages=USER, extra_headers=key
        )

    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(call, client)
        wait_until(lambda: keyed.sim_stats()["active"] > stats["active"], 10, "the upstream call")
        second = pool.submit(call, replica(keyed))  # the other ingress process
        original, repeat = first.result(), second.result()
    assert REPLAYED not in original.headers
    assert repeat.headers[REPLAYED] == "true"
    assert repeat.parse().id == original.parse().id
    assert repeat.parse().choices[0].message.content == original.parse().choices[0].message.content
    assert upstream_calls(keyed) == stats["requests"] + 1


def test_a_streamed_answer_is_replayed_as_the_same_stream(
    keyed: Stack, client: openai.OpenAI
) -> None:
    key = fresh()

    def stream() -> tuple[httpx.Headers, list[str], str]:
        raw = client.chat.completions.with_raw_response.create(
            model="sim",
            messages=USER,
            stream=True,
            stream_options={"include_usage": True},
            extra_headers=key,
        )
        ids, text = [], ""
        for chunk in raw.parse():
            ids.append(chunk.id)
            if chunk.choices and chunk.choices[0].delta.content:
                text += chunk.choices[0].delta.content
        return raw.headers, ids, text

    before = upstream_calls(keyed)
    first_headers, first_ids, first_text = stream()
    second_headers, second_ids, second_text = stream()
    assert first_text and (second_ids, second_text) == (first_ids, first_text)
    assert REPLAYED not in first_headers and second_headers[REPLAYED] == "true"
    assert second_headers["content-type"].startswith("text/event-stream")
    assert upstream_calls(keyed) == before + 1


def test_a_failed_original_is_not_kept(keyed: Stack) -> None:
    key = fresh()
    body = {"model": "sim-500", "messages": USER}
    before = upstream_calls(keyed)
    failed = post(keyed, body, key)
    assert failed.status_code >= 500
    calls = upstream_calls(keyed) - before
    assert calls > 0
    again = post(keyed, body, key)
    assert again.status_code >= 500 and REPLAYED not in again.headers
    assert upstream_calls(keyed) == before + 2 * calls


def test_a_stream_the_client_left_is_not_kept(keyed: Stack) -> None:
    key = fresh()
    body = {"model": "sim-2s", "messages": USER, "stream": True}
    stats = keyed.sim_stats()
    headers = {"authorization": f"Bearer {MASTER}", **key}
    url = f"{keyed.base_url}/v1/chat/completions"
    with httpx.stream("POST", url, json=body, headers=headers, timeout=30) as left:
        assert left.status_code == 200
        assert next(left.iter_lines()).startswith("data: ")
    keyed.sim_wait("disconnects", stats["disconnects"] + 1)  # the upstream call was stopped
    with httpx.stream("POST", url, json=body, headers=headers, timeout=30) as again:
        text = again.read().decode()
    assert REPLAYED not in again.headers and text.endswith("data: [DONE]\n\n")
    assert upstream_calls(keyed) == stats["requests"] + 2


def test_a_bad_key_is_refused(keyed: Stack) -> None:
    body = {"model": "sim", "messages": USER}
    for value in ("", "k" * 256):
        refused = post(keyed, body, {"Idempotency-Key": value})
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["param"] == "Idempotency-Key"
    assert post(keyed, body, {"Idempotency-Key": "k" * 255}).status_code == 200


def test_two_callers_never_share_a_key(keyed: Stack) -> None:
    def new_key() -> str:
        made = httpx.post(
            f"{keyed.base_url}/key/generate",
            headers={"authorization": f"Bearer {MASTER}"},
            json={},
            timeout=10,
        )
        assert made.status_code == 200, made.text
        return str(made.json()["key"])

    shared = fresh()
    ann, bob = (
        openai.OpenAI(base_url=f"{keyed.base_url}/v1", api_key=new_key(), max_retries=0)
        for _ in range(2)
    )
    first = ann.chat.completions.create(model="sim", messages=USER, extra_headers=shared)
    other = bob.chat.completions.create(
        model="sim", messages=[{"role": "user", "content": "bye"}], extra_headers=shared
    )
    assert other.id != first.id
    again = ann.chat.completions.create(model="sim", messages=USER, extra_headers=shared)
    assert again.id == first.id


def test_embeddings_are_replayed_too(keyed: Stack, client: openai.OpenAI) -> None:
    key = fresh()

    def embed() -> Any:
        return client.embeddings.with_raw_response.create(
            model="sim-embed", input="some text", encoding_format="float", extra_headers=key
        )

    first, second = embed(), embed()
    assert REPLAYED not in first.headers and second.headers[REPLAYED] == "true"
    assert second.parse().data[0].embedding == first.parse().data[0].embedding
    assert usage_rows(keyed, first.headers["x-request-id"]) == 1


def test_a_repeat_takes_over_when_the_original_ingress_died(keyed: Stack) -> None:
    key = fresh()
    body = {"model": "sim-3s", "messages": USER, "x-gateway": {"timeout": 5}}
    stats = keyed.sim_stats()
    with ThreadPoolExecutor(1) as pool:
        lost = pool.submit(post, keyed, body, key)
        wait_until(lambda: keyed.sim_stats()["active"] > stats["active"], 10, "the upstream call")
        keyed.kill("ingress")
        with pytest.raises(httpx.HTTPError):
            lost.result()
    try:
        other = keyed.replica_url("ingress-2")
        repeat = post(keyed, body, key, other)  # waits out the original's deadline, then runs
        assert repeat.status_code == 200, repeat.text
        assert REPLAYED not in repeat.headers
        assert upstream_calls(keyed) == stats["requests"] + 2
        again = post(keyed, body, key, other)
        assert again.headers[REPLAYED] == "true" and again.json()["id"] == repeat.json()["id"]
    finally:
        keyed.start("ingress")
        keyed.wait_ready()
