"""Groups, fallbacks and retries before the first byte, through real NATS."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from tests.stack import Stack

pytestmark = pytest.mark.integration

USER: list[dict[str, str]] = [{"role": "user", "content": "hello"}]


def rows(stack: Stack, model: str, expected: int) -> list[list[object]]:
    deadline = time.monotonic() + 30
    found: list[list[object]] = []
    while time.monotonic() < deadline:
        found = stack.sql(
            "SELECT attempt, deployment, status FROM requests "
            f"WHERE model = '{model}' ORDER BY attempt"
        )
        if len(found) >= expected:
            break
        time.sleep(0.2)
    return found


def test_a_failing_deployment_hands_over_to_the_next_in_its_group(
    client: openai.OpenAI, stack: Stack
) -> None:
    reply = client.chat.completions.with_raw_response.create(model="sim-group", messages=USER)
    assert reply.headers["x-igw-deployment"] == "group-good"
    assert reply.headers["x-igw-attempts"] == "2"
    assert reply.parse().choices[0].finish_reason == "stop"
    assert rows(stack, "sim-group", 2) == [[1, "group-bad", "error"], [2, "group-good", "ok"]]


def test_fallback_alias_answers_a_stream_when_the_first_is_down(client: openai.OpenAI) -> None:
    with client.chat.completions.with_streaming_response.create(
        model="sim-fallback", messages=USER, stream=True
    ) as response:
        assert response.headers["x-igw-deployment"] == "sim-echo"
        assert response.headers["x-igw-attempts"] == "2"
        text = "".join(c.choices[0].delta.content or "" for c in response.parse() if c.choices)
    assert text == "user:hello"


def test_a_transient_429_is_retried_after_its_retry_after(
    client: openai.OpenAI, stack: Stack
) -> None:
    started = time.monotonic()
    reply = client.chat.completions.with_raw_response.create(model="sim-retry", messages=USER)
    assert time.monotonic() - started >= 0.3
    assert reply.headers["x-igw-attempts"] == "2"
    assert reply.parse().choices[0].message.content
    assert [r[2] for r in rows(stack, "sim-retry", 2)] == ["error", "ok"]


def test_without_another_candidate_the_client_gets_the_error_at_once(
    client: openai.OpenAI,
) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="sim-500", messages=USER)
    assert caught.value.status_code == 502
    assert caught.value.response.headers["x-igw-deployment"] == "sim-500"


def test_gateway_options_timeout_and_provider_pin(client: openai.OpenAI, stack: Stack) -> None:
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as late:
        client.chat.completions.create(
            model="sim-3s", messages=USER, extra_body={"x-gateway": {"timeout": 0.5}}
        )
    assert late.value.status_code == 504 and time.monotonic() - started < 2.5

    with pytest.raises(openai.APIStatusError) as by_header:
        client.chat.completions.create(
            model="sim-3s", messages=USER, extra_headers={"x-gateway-timeout": "0.5"}
        )
    assert by_header.value.status_code == 504

    pinned = client.chat.completions.with_raw_response.create(
        model="sim-group",
        messages=USER,
        extra_body={"x-gateway": {"provider": "openai", "metadata": {"feature": "chat"}}},
    )
    assert pinned.headers["x-igw-deployment"] == "group-good"
    assert pinned.headers["x-igw-attempts"] == "2"

    with pytest.raises(openai.BadRequestError) as wrong:
        client.chat.completions.create(
            model="sim", messages=USER, extra_body={"x-gateway": {"provider": "gemini"}}
        )
    assert wrong.value.body["param"] == "x-gateway.provider"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(
            model="sim", messages=USER, extra_body={"x-gateway": {"timeout": -1}}
        )
    assert bad.value.body["param"] == "x-gateway.timeout"  # type: ignore[index]


def test_auto_model_and_the_infer_endpoint(client: openai.OpenAI, stack: Stack) -> None:
    assert "auto" in [m.id for m in client.models.list()]
    reply = client.chat.completions.with_raw_response.create(model="auto", messages=USER)
    assert reply.headers["x-igw-deployment"] in ("sim", "sim-echo")

    answer = httpx.post(
        f"{stack.base_url}/infer",
        headers={"X-API-Key": "unused"},
        json={"model": "auto", "prompt": "Explain quantum computing.", "max_tokens": 5},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["provider"] == "openai" and body["deployment"] in ("sim", "sim-echo")
    assert body["output"] and body["latency_ms"] > 0
    assert body["cost"] == pytest.approx(
        (body["prompt_tokens"] * 0.15 + body["completion_tokens"] * 0.60) / 1e6
    )
    missing = httpx.post(f"{stack.base_url}/infer", json={"model": "auto"}, timeout=10)
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "prompt"


def test_a_request_no_deployment_can_serve_is_a_400(client: openai.OpenAI) -> None:
    huge = "word " * 3000  # about 3,750 tokens; sim-small declares a 1,000-token window
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="sim-small", messages=[{"role": "user", "content": huge}]
        )
    assert caught.value.body["code"] == "no_capable_deployment"  # type: ignore[index]


def test_a_context_window_error_falls_back_to_a_larger_model(
    client: openai.OpenAI, stack: Stack
) -> None:
    reply = client.chat.completions.with_raw_response.create(model="sim-ctx", messages=USER)
    assert reply.headers["x-igw-deployment"] == "sim-long"
    assert reply.parse().choices[0].message.content == "user:hello"
    rows_seen = rows(stack, "sim-ctx", 2)
    assert [r[1:] for r in rows_seen] == [["sim-ctx", "error"], ["sim-long", "ok"]]


def test_a_stall_before_the_first_token_moves_to_the_next_deployment(
    client: openai.OpenAI,
) -> None:
    stream = client.chat.completions.with_streaming_response.create(
        model="sim-hang", messages=USER, stream=True
    )
    with stream as response:
        assert response.headers["x-igw-deployment"] == "hang-good"
        assert response.headers["x-igw-attempts"] == "2"
        text = "".join(c.choices[0].delta.content or "" for c in response.parse() if c.choices)
    assert text.startswith("lorem ipsum")


@pytest.mark.parametrize("model", ["sim-midcut", "sim-midstall"])
def test_no_retry_once_the_first_byte_reached_the_client(client: openai.OpenAI, model: str) -> None:
    seen: list[str] = []

    def drain() -> None:
        for chunk in client.chat.completions.create(model=model, messages=USER, stream=True):
            seen.extend(c.delta.content or "" for c in chunk.choices)

    with pytest.raises(openai.APIError):
        drain()
    assert "".join(seen).startswith("lorem")  # the broken stream's tokens, then an error event


def test_requests_wait_for_capacity_then_get_a_429_when_their_budget_runs_out(
    client: openai.OpenAI,
) -> None:
    started = time.monotonic()
    with ThreadPoolExecutor(3) as pool:  # 60 rpm: one now, then one a second
        replies = list(
            pool.map(
                lambda _: client.chat.completions.create(model="sim-limited", messages=USER),
                range(3),
            )
        )
    assert all(r.choices[0].finish_reason == "stop" for r in replies)
    assert time.monotonic() - started >= 1.5  # the last one waited about 2 s in JetStream

    with pytest.raises(openai.RateLimitError) as caught:  # a budget shorter than the wait
        client.chat.completions.create(
            model="sim-limited", messages=USER, extra_body={"x-gateway": {"timeout": 1.2}}
        )
    assert int(caught.value.response.headers["retry-after"]) >= 1
    assert "rate limit" in caught.value.message


def test_a_late_first_token_is_hedged_and_the_loser_cancelled(
    client: openai.OpenAI, stack: Stack
) -> None:
    disconnects = stack.sim_stats()["disconnects"]
    started = time.monotonic()
    reply = client.chat.completions.with_raw_response.create(model="sim-hedge", messages=USER)
    assert time.monotonic() - started < 2.0  # the slow deployment would take 4 s
    assert reply.headers["x-igw-deployment"] == "hedge-fast"
    assert reply.headers["x-igw-attempts"] == "2"
    stack.sim_wait("disconnects", disconnects + 1)  # the slow attempt was cancelled

    with client.chat.completions.with_streaming_response.create(
        model="sim-hedge", messages=USER, stream=True
    ) as response:
        assert response.headers["x-igw-deployment"] == "hedge-fast"
        text = "".join(c.choices[0].delta.content or "" for c in response.parse() if c.choices)
    assert text.startswith("lorem ipsum")
    statuses = sorted((r[1], r[2]) for r in rows(stack, "sim-hedge", 4))
    assert statuses == [
        ("hedge-fast", "ok"),
        ("hedge-fast", "ok"),
        ("hedge-slow", "cancelled"),
        ("hedge-slow", "cancelled"),
    ]


def test_response_cache_on_request(client: openai.OpenAI, stack: Stack) -> None:
    messages = [{"role": "user", "content": f"cache me {time.time()}"}]
    cached = {"x-gateway": {"cache": True}}
    first = client.chat.completions.with_raw_response.create(
        model="sim",
        messages=messages,
        extra_body=cached,  # type: ignore[arg-type]
    )
    assert first.headers["x-cache"] == "MISS"
    calls = stack.sim_stats()["requests"]
    deadline = time.monotonic() + 5
    second = first
    while time.monotonic() < deadline:  # the answer is stored in the background
        second = client.chat.completions.with_raw_response.create(
            model="sim",
            messages=messages,
            extra_body=cached,  # type: ignore[arg-type]
        )
        if second.headers["x-cache"] == "HIT":
            break
    assert second.headers["x-cache"] == "HIT"
    assert second.parse().choices[0].message.content == first.parse().choices[0].message.content
    assert stack.sim_stats()["requests"] <= calls + 1
    plain = client.chat.completions.with_raw_response.create(model="sim", messages=messages)  # type: ignore[arg-type]
    assert "x-cache" not in plain.headers


def test_weighted_and_lowest_latency_strategies(client: openai.OpenAI) -> None:
    def served_by(model: str) -> str:
        reply = client.chat.completions.with_raw_response.create(model=model, messages=USER)
        return reply.headers["x-igw-deployment"]

    weighted = [served_by("sim-weighted") for _ in range(60)]
    assert 30 <= weighted.count("weighted-3") <= 57  # 3 of 4 expected: 45

    latency = [served_by("sim-latency") for _ in range(12)]
    assert "latency-slow" in latency  # a deployment with no record yet gets tried
    assert latency[-6:] == ["latency-fast"] * 6  # then the faster one keeps the traffic


def test_status_shows_requests_waiting_for_capacity(client: openai.OpenAI, stack: Stack) -> None:
    def queued() -> int:
        rows_ = httpx.get(f"{stack.base_url}/api/v1/providers/status", timeout=5).json()["data"]
        return int(next(r["queued"] for r in rows_ if r["deployment"] == "sim-limited"))

    with ThreadPoolExecutor(4) as pool:
        futures = [
            pool.submit(client.chat.completions.create, model="sim-limited", messages=USER)
            for _ in range(4)
        ]
        deadline, peak = time.monotonic() + 5, 0
        while time.monotonic() < deadline and peak == 0:
            peak = max(peak, queued())
        for future in futures:
            future.result()
    assert peak >= 1
    assert queued() == 0


def test_a_content_policy_refusal_falls_back_to_another_model(client: openai.OpenAI) -> None:
    reply = client.chat.completions.with_raw_response.create(model="sim-refuse", messages=USER)
    assert reply.headers["x-igw-deployment"] == "sim-echo"
    assert reply.headers["x-igw-attempts"] == "2"  # not retried on the refusing deployment
    assert reply.parse().choices[0].message.content == "user:hello"
