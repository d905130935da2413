"""Tracing through a real stack: one trace per request across the ingress, the
router, the worker and accounting, exported over OTLP/HTTP to a receiver in
this test; JSON log lines carrying the request and trace ids; no keys or
prompts in either."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest

from tests.integration.observability.otlp_receiver import OtlpReceiver, ReceivedSpan
from tests.stack import Stack
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

MASTER = "sk-master-tracing-0123456789"
PROMPT = "tell me about the lighthouse keeper 7f3a9c"
SERVICES = ("igw-ingress", "igw-router", "igw-worker-openai", "igw-accounting")
TRACED_LOGS = ("router", "worker-openai")
"""Services that write a DEBUG line for every request they handle."""


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    running = OtlpReceiver().start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory, receiver: OtlpReceiver) -> Iterator[Stack]:
    root: Path = tmp_path_factory.mktemp("igw-tracing")
    stack = Stack(
        root,
        extra_env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
            "OTEL_BSP_SCHEDULE_DELAY": "50",
            "OTEL_TRACES_SAMPLER": "parentbased_always_on",
        },
    )
    stack.overrides = {
        "auth": {"master_key": MASTER},
        "logging": {"format": "json", "level": "DEBUG"},
    }
    try:
        stack.start_all()
        yield stack
    finally:
        stack.stop_all()


@pytest.fixture(scope="module")
def key(traced: Stack) -> str:
    return traced.new_key(MASTER, models=["sim"])


@pytest.fixture(scope="module")
def client(traced: Stack, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{traced.base_url}/v1", api_key=key, max_retries=0, timeout=30)


def request_trace(receiver: OtlpReceiver, request_id: str) -> list[ReceivedSpan]:
    """Every span of the trace the ingress started for ``request_id``, once spans from
    all four services (accounting's included) have arrived."""
    found: list[ReceivedSpan] = []

    def complete() -> bool:
        spans = receiver.snapshot()
        roots = [s for s in spans if s.attributes.get("igw.request_id") == request_id]
        server = [s for s in roots if s.service == "igw-ingress"]
        if not server:
            return False
        found[:] = [s for s in spans if s.trace_id == server[0].trace_id]
        return {s.service for s in found} >= set(SERVICES)

    wait_until(complete, 20, f"spans of {request_id} from {', '.join(SERVICES)}")
    return found


def one(spans: list[ReceivedSpan], service: str) -> ReceivedSpan:
    matching = [s for s in spans if s.service == service]
    assert len(matching) == 1, matching
    return matching[0]


def check_tree(spans: list[ReceivedSpan], request_id: str) -> dict[str, ReceivedSpan]:
    """ingress (server, root) -> router -> worker (GenAI client span) -> accounting."""
    assert len({s.trace_id for s in spans}) == 1
    by_id = {s.span_id: s for s in spans}
    assert len(by_id) == len(spans)
    for span in spans:
        assert span.parent_id is None or span.parent_id in by_id, span
    ingress = one(spans, "igw-ingress")
    router = one(spans, "igw-router")
    worker = one(spans, "igw-worker-openai")
    accounting = one(spans, "igw-accounting")
    assert (ingress.kind, ingress.parent_id) == ("SERVER", None)
    assert ingress.name == "POST /v1/chat/completions"
    assert ingress.attributes["http.response.status_code"] == 200
    assert (router.kind, router.parent_id, router.name) == (
        "CONSUMER",
        ingress.span_id,
        "route sim",
    )
    assert router.attributes["igw.deployment"] == "sim"
    assert (worker.kind, worker.parent_id, worker.name) == ("CLIENT", router.span_id, "chat sim")
    assert (accounting.kind, accounting.parent_id) == ("CONSUMER", worker.span_id)
    assert accounting.attributes["igw.request_id"] == request_id
    for span in (router, worker):
        assert span.attributes["igw.request_id"] == request_id
    assert all(s.status != "ERROR" for s in spans)
    return {"ingress": ingress, "router": router, "worker": worker, "accounting": accounting}


def check_genai(span: ReceivedSpan, model: str, usage: Any, finish: str, stream: bool) -> None:
    attributes = span.attributes
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.provider.name"] == "openai"
    assert attributes["gen_ai.request.model"] == "sim"
    assert attributes["gen_ai.request.stream"] is stream
    assert attributes["gen_ai.response.model"] == model
    assert attributes["gen_ai.usage.input_tokens"] == usage.prompt_tokens
    assert attributes["gen_ai.usage.output_tokens"] == usage.completion_tokens
    assert attributes["gen_ai.response.finish_reasons"] == (finish,)
    assert "error.type" not in attributes


def messages() -> list[Any]:
    return [{"role": "user", "content": PROMPT}]


def test_a_completion_is_one_trace_across_all_services(
    client: openai.OpenAI, receiver: OtlpReceiver
) -> None:
    raw = client.chat.completions.with_raw_response.create(model="sim", messages=messages())
    completion = raw.parse()
    request_id = raw.headers["x-request-id"]
    spans = check_tree(request_trace(receiver, request_id), request_id)
    assert completion.usage is not None
    finish = completion.choices[0].finish_reason
    check_genai(spans["worker"], completion.model, completion.usage, finish, stream=False)
    assert spans["ingress"].attributes["igw.request_id"] == request_id


def test_a_stream_is_one_trace_across_all_services(
    client: openai.OpenAI, receiver: OtlpReceiver
) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="sim", messages=messages(), stream=True, stream_options={"include_usage": True}
    )
    request_id = raw.headers["x-request-id"]
    chunks = list(raw.parse())
    usage = chunks[-1].usage
    assert usage is not None
    finish = next(
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    )
    spans = check_tree(request_trace(receiver, request_id), request_id)
    check_genai(spans["worker"], chunks[0].model, usage, finish, stream=True)


def test_a_client_traceparent_becomes_the_parent(
    traced: Stack, key: str, receiver: OtlpReceiver
) -> None:
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    reply = httpx.post(
        f"{traced.base_url}/v1/chat/completions",
        headers={"authorization": f"Bearer {key}", "traceparent": parent},
        json={"model": "sim", "messages": messages()},
        timeout=30,
    )
    assert reply.status_code == 200, reply.text
    spans = request_trace(receiver, reply.headers["x-request-id"])
    ingress = one(spans, "igw-ingress")
    assert ingress.trace_id == "0af7651916cd43dd8448eb211c80319c"
    assert ingress.parent_id == "b7ad6b7169203331"


def json_lines(stack: Stack, service: str) -> list[dict[str, Any]]:
    path = stack.root / f"{service}.log"
    out = []
    for line in path.read_bytes().splitlines():
        try:
            parsed = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue  # a line some library printed itself
        if isinstance(parsed, dict):
            out.append(parsed)
    return out


def test_json_logs_carry_the_request_and_trace_ids(
    traced: Stack, client: openai.OpenAI, receiver: OtlpReceiver
) -> None:
    raw = client.chat.completions.with_raw_response.create(model="sim", messages=messages())
    request_id = raw.headers["x-request-id"]
    trace_id = one(request_trace(receiver, request_id), "igw-ingress").trace_id
    lines: dict[str, list[dict[str, Any]]] = {}

    def logged() -> bool:
        for service in TRACED_LOGS:
            mine = [x for x in json_lines(traced, service) if x.get("request_id") == request_id]
            lines[service] = mine
        return all(lines.values())

    wait_until(logged, 10, f"log lines of {request_id} from {', '.join(TRACED_LOGS)}")
    for service, mine in lines.items():
        for line in mine:
            assert line["trace_id"] == trace_id, (service, line)
            assert len(line["span_id"]) == 16
            assert line["service"] == service


def test_no_keys_or_prompts_in_logs_or_traces(
    traced: Stack, key: str, client: openai.OpenAI, receiver: OtlpReceiver
) -> None:
    client.chat.completions.create(model="sim", messages=messages())
    info = httpx.get(
        f"{traced.base_url}/key/info",
        params={"key": key},
        headers={"authorization": f"Bearer {MASTER}"},
        timeout=10,
    )
    assert info.status_code == 200
    models = httpx.get(
        f"{traced.base_url}/v1/models", headers={"authorization": f"Bearer {key}"}, timeout=10
    )
    assert models.status_code == 200
    # FastAPI's own span of /v1/models shows its requests are traced and exported
    wait_until(
        lambda: any(s.attributes.get("url.path") == "/v1/models" for s in receiver.snapshot()),
        10,
        "the span of GET /v1/models",
    )
    logs = "".join(p.read_text(errors="replace") for p in traced.root.glob("*.log"))
    exported = receiver.raw()
    for secret in (key, MASTER):
        assert secret not in logs
        assert secret.encode() not in exported
    assert PROMPT not in logs  # logging.log_prompts is off
    assert PROMPT.encode() not in exported
    assert not any(
        s.attributes.get("url.path", "").startswith("/key/") for s in receiver.snapshot()
    )
