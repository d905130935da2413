"""A rolling restart under streaming load (reliability scenario 19).

Two ingress replicas, two routers, two workers and accounting; client loops
stream chat completions through the official SDK, alternating replicas, while
every process in turn is sent SIGTERM and started again once the previous one
is back. No accepted stream is truncated (each ends with its finish reason, its
usage chunk and ``[DONE]``), every accepted request is answered, streams were
in flight on each ingress as it drained, and ClickHouse holds exactly one usage
row for each request.
"""

from __future__ import annotations

import functools
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.reliability.load import Load
from tests.stack import Stack, sim_model
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

MODEL = "sim-rolling"
SERVICES = (
    "simulator",
    "router",
    "router-2",
    "worker-openai",
    "worker-openai-2",
    "accounting",
    "ingress",
    "ingress-2",
)
READY_LINE = {
    "router": "router is routing",
    "worker": "worker for provider openai is consuming",
    "accounting": "accounting ready",
}
"""What each service logs once it serves again (an ingress: its /ready answers 200)."""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root: Path = tmp_path_factory.mktemp("igw-rolling")
    deployment = Stack(root, services=SERVICES)
    # about 1.5 s per stream: always a few in flight on each process
    deployment.extra_models = [sim_model(MODEL, "sim?itl_ms=25&tokens=60", deployment.sim_port)]
    deployment.overrides = {
        "server": {"shutdown_grace_s": 15},
        "workers": {"shutdown_grace_s": 15},
    }
    try:
        deployment.start_all()
        yield deployment
    finally:
        deployment.stop_all()


def url_of(stack: Stack, name: str) -> str:
    return stack.base_url if name == "ingress" else stack.replica_url(name)


def serving(stack: Stack, name: str, lines_before: int) -> bool:
    if name.startswith("ingress"):
        try:
            return httpx.get(f"{url_of(stack, name)}/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False
    return ready_lines(stack, name) > lines_before


def ready_lines(stack: Stack, name: str) -> int:
    path = stack.root / f"{name}.log"
    text = path.read_text(errors="replace") if path.exists() else ""
    return text.count(READY_LINE.get(name.split("-")[0], "\0"))


def test_a_rolling_restart_truncates_no_stream_and_accounts_each_request_once(
    stack: Stack,
) -> None:
    replicas = ["ingress", "ingress-2"]
    load = Load([url_of(stack, name) for name in replicas], MODEL, stream=True)
    load.start(loops=4)
    drained_at: dict[str, float] = {}
    try:
        wait_until(lambda: load.finished() >= 8, 30, "the load to flow")
        for name in ("ingress", "ingress-2", "worker-openai", "worker-openai-2", "router",
                     "router-2", "accounting"):  # fmt: skip
            before = ready_lines(stack, name)
            if name in replicas:
                replica = replicas.index(name)
                streaming = functools.partial(lambda r: load.open_on(r) >= 1, replica)
                wait_until(streaming, 30, f"a stream on {name}")
            drained_at[name] = time.monotonic()
            stack.kill(name, signal.SIGTERM)  # returns once the process has exited
            stack.start(name)
            back = functools.partial(serving, stack, name, before)
            wait_until(back, 30, f"{name} to serve")
            flowing = functools.partial(lambda n: load.finished() >= n + 4, load.finished())
            wait_until(flowing, 30, "requests to flow")
    finally:
        load.stop()

    accepted = load.accepted()
    failed = [o for o in accepted if not o.complete]
    assert not failed, f"{len(failed)} of {len(accepted)} accepted requests failed: {failed[:5]}"
    assert len(accepted) >= 40
    # each ingress had streams open when it was told to stop, and they finished
    for replica, name in enumerate(replicas):
        at = drained_at[name]
        spanning = [o for o in accepted if o.replica == replica and o.started < at < o.ended]
        assert spanning, f"no stream was open as {name} drained"

    ids = {o.request_id or "" for o in accepted}
    assert "" not in ids

    def rows() -> dict[str, tuple[int, int, str]]:
        try:
            result = stack.sql(
                "SELECT request_id, count(), countIf(final), any(status) FROM requests "
                f"WHERE model = '{MODEL}' GROUP BY request_id"
            )
        except AssertionError:  # accounting is starting
            return {}
        return {r[0]: (int(r[1]), int(r[2]), str(r[3])) for r in result}

    wait_until(lambda: ids <= rows().keys(), 60, "a usage row for every request")
    stored = rows()
    assert stored.keys() == ids, f"rows for requests no client saw: {stored.keys() - ids}"
    assert {stored[i] for i in ids} == {(1, 1, "ok")}, "a request was accounted twice or failed"
