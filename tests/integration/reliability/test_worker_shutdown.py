"""A worker told to stop whose attempts outlast its grace period.

An attempt that has not answered yet is handed back (naked) and another worker
runs it: the client gets its whole answer. An attempt whose stream had started
is not retried (no retry after the first byte): the stream ends with an error
event, never a silent cut, and its tokens are accounted once as cancelled.
And an attempt whose client left while its worker hung, and whose worker then
died, is still accounted once when another worker gets it back.
"""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.stack import Stack, sim_model
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

PROMPT: list[Any] = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root: Path = tmp_path_factory.mktemp("igw-worker-stop")
    deployment = Stack(
        root, services=("simulator", "router", "worker-openai", "accounting", "ingress")
    )
    p = deployment.sim_port
    deployment.extra_models = [
        sim_model("sim-endless", "sim?itl_ms=50&tokens=200", p),  # 10 s
        sim_model("sim-late", "sim?ttft_ms=2500", p),
    ]
    deployment.overrides = {"workers": {"shutdown_grace_s": 0.5}, "bus": {"work_ack_wait_s": 5}}
    try:
        deployment.start_all()
        yield deployment
    finally:
        deployment.stop_all()


def test_a_stopping_worker_hands_back_what_has_not_answered(stack: Stack) -> None:
    url = f"{stack.base_url}/v1/chat/completions"
    events: list[dict[str, Any]] = []
    answer: list[httpx.Response] = []
    headers: dict[str, str] = {}

    def stream() -> None:
        body = {"model": "sim-endless", "messages": PROMPT, "stream": True}
        with httpx.stream("POST", url, json=body, timeout=30) as reply:
            headers.update(reply.headers)
            for line in reply.iter_lines():
                if line.startswith("data: {"):
                    events.append(json.loads(line.removeprefix("data: ")))

    def late() -> None:
        body = {"model": "sim-late", "messages": PROMPT}
        answer.append(httpx.post(url, json=body, timeout=30))

    started = stack.sim_stats()["requests"]
    threads = [threading.Thread(target=stream), threading.Thread(target=late)]
    for thread in threads:
        thread.start()
    stack.sim_wait("requests", started + 2)  # both are upstream, on the only worker
    wait_until(lambda: len(events) >= 3, 10, "the stream to start")
    stack.start("worker-openai-2")
    wait_until(lambda: "is consuming" in stack.log("worker-openai-2"), 30, "a second worker")
    stack.kill("worker-openai", signal.SIGTERM)
    for thread in threads:
        thread.join(30)

    last = events[-1]
    assert last.get("error", {}).get("code") == "shutting_down", last
    assert all("error" not in e for e in events[:-1])
    (reply,) = answer
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["finish_reason"] == "stop"
    late_id, stream_id = reply.headers["x-request-id"], headers["x-request-id"]

    def rows() -> list[list[Any]]:
        return stack.sql(
            "SELECT request_id, status, count() FROM requests "
            f"WHERE request_id IN ('{late_id}', '{stream_id}') GROUP BY request_id, status"
        )

    wait_until(lambda: len(rows()) == 2, 30, "both usage rows")
    assert sorted(map(tuple, rows())) == sorted([(late_id, "ok", 1), (stream_id, "cancelled", 1)])


def only_worker(stack: Stack, name: str) -> None:
    for running in [n for n in stack.procs if n.startswith("worker-")]:
        stack.kill(running)
    stack.start(name)
    wait_until(lambda: "is consuming" in stack.log(name), 30, f"{name} to consume")


def test_a_cancelled_attempt_whose_worker_died_is_still_accounted(stack: Stack) -> None:
    only_worker(stack, "worker-openai-3")
    url = f"{stack.base_url}/v1/chat/completions"
    body = {"model": "sim-endless", "messages": PROMPT, "stream": True}
    with httpx.stream("POST", url, json=body, timeout=30) as reply:
        request_id = reply.headers["x-request-id"]
        lines = reply.iter_lines()
        while not next(lines).startswith("data: {"):
            pass
        stack.procs["worker-openai-3"].send_signal(signal.SIGSTOP)  # hung: no usage, no ack
        stack.start("worker-openai-4")
        wait_until(lambda: "is consuming" in stack.log("worker-openai-4"), 30, "a second worker")
    # the client has left: its cancel reached worker-openai-4 (the other one is frozen), and
    # the attempt comes back to it once worker-openai-3 is gone and the ack wait has passed
    stack.kill("worker-openai-3")

    def rows() -> list[list[Any]]:
        return stack.sql(
            "SELECT status, count() FROM requests "
            f"WHERE request_id = '{request_id}' GROUP BY status"
        )

    wait_until(lambda: bool(rows()), 30, "the attempt's usage row")
    assert rows() == [["cancelled", 1]]
