"""Scale-out on one machine, and failover under load (reliability scenarios 12, 21, 24).

Three nats-server processes form a JetStream cluster on loopback (streams and
KV buckets R3); two processes run each service: ingress, router, worker and
accounting (the embedded store allows one writer, so the second accounting
process is its hot standby: see ``services/accounting/standby.py``). Client
loops send chat completions, streaming and not, to both ingress replicas, and a
key with an rpm limit is probed through both. Then the NATS node leading the
request stream and one process of each service are killed with SIGKILL.

Afterwards: every request that got a 200 was answered completely (a stream cut
by the ingress that was killed is the one exception); every other request got
an error, none hung; ClickHouse has exactly one final usage row for every
answered request and no attempt twice; and the rpm limit held across both
replicas in every minute. The figures (requests/s, the failover pause) are
printed (run with ``-s``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import nats
import pytest

from services.accounting.standby import lock_path
from tests.integration.reliability.load import PROMPT, Load, Outcome
from tests.stack import Stack, sim_model
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

MASTER = "sk-master-scale-0123456789"
MODEL = "sim-scale"
RPM = 20
BUDGET = 0.0002
"""USD: about 50 requests of the probes' size, so it runs out around the kills."""
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
HUNG_S = 25.0
"""The clients' timeout (the request deadline is 20 s)."""
SLOWEST_S = 15.0
"""The slowest a request may be: a killed router's requests come back after its 10 s
ack wait. A reply lost with the NATS node would show as a 20 s deadline."""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root: Path = tmp_path_factory.mktemp("igw-scale")
    stack = Stack(root, services=SERVICES, nats_nodes=3)
    stack.extra_models = [sim_model(MODEL, "sim?ttft_ms=50&itl_ms=10&tokens=30", stack.sim_port)]
    stack.overrides = {"auth": {"master_key": MASTER}, "clickhouse": {"standby": True}}
    try:
        stack.start_all()
        # the standby serves nothing (no /health either) until it takes over, so it
        # is started once the rest is ready
        stack.start("accounting-2")
        wait_until(lambda: "standing by" in stack.log("accounting-2"), 30, "the standby")
        yield stack
    finally:
        stack.stop_all()


@dataclass
class RpmProbe:
    """Requests with a limited key, alternating replicas, about ten a second."""

    urls: list[str]
    key: str
    admitted: list[tuple[float, float]] = field(default_factory=list)
    """(sent, answered) wall-clock times of each 200."""
    other: Counter[int] = field(default_factory=Counter)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(60)

    def _run(self) -> None:
        body = {"model": "sim", "messages": PROMPT, "max_tokens": 4}
        headers = {"authorization": f"Bearer {self.key}"}
        with httpx.Client(timeout=HUNG_S) as client:
            n = 0
            while not self._stop.wait(0.1):  # pacing, not waiting for an event
                n += 1
                sent = time.time()
                try:
                    reply = client.post(
                        f"{self.urls[n % 2]}/v1/chat/completions", json=body, headers=headers
                    )
                except httpx.HTTPError:
                    continue  # a killed replica
                if reply.status_code == 200:
                    self.admitted.append((sent, time.time()))
                else:
                    self.other[reply.status_code] += 1

    def most_in_one_minute(self) -> int:
        """Admissions that surely fell into one rate-limit minute (sent and answered in it)."""
        minutes = Counter(int(s // 60) for s, a in self.admitted if int(s // 60) == int(a // 60))
        return max(minutes.values(), default=0)


async def stream_leader(url: str) -> str:
    nc = await nats.connect(url.split(","))
    try:
        info = await nc.jetstream().stream_info("IGW_REQUESTS")
        assert info.cluster is not None and info.cluster.leader is not None
        return info.cluster.leader
    finally:
        await nc.close()


async def usage_consumer(url: str, missing: set[str]) -> str:
    """The accounting consumer's state and the usage events of ``missing`` requests that
    are in IGW_USAGE, for a failure message."""
    nc = await nats.connect(url.split(","))
    try:
        js = nc.jetstream()
        info = await js.consumer_info("IGW_USAGE", "accounting")
        found: list[str] = []
        scanned = 0
        sub = await js.subscribe("igw.usage.>", stream="IGW_USAGE", ordered_consumer=True)
        with contextlib.suppress(TimeoutError):
            while True:
                msg = await sub.next_msg(timeout=3)
                scanned += 1
                if any(i.encode() in msg.data for i in missing):
                    found.append(f"seq {msg.metadata.sequence.stream}: {msg.data[:300]!r}")
        return (
            f"consumer pending {info.num_pending}, ack pending {info.num_ack_pending}, "
            f"redelivered {info.num_redelivered}; of {scanned} events in the stream: {found}"
        )
    finally:
        await nc.close()


def active_accounting(stack: Stack) -> str:
    pid = int(lock_path(f"chdb://{stack.root / 'data' / 'clickhouse'}").read_text())
    (name,) = [n for n in ("accounting", "accounting-2") if stack.procs[n].pid == pid]
    return name


def longest_pause(outcomes: list[Outcome], start: float, end: float) -> float:
    """The longest time in [start, end] in which no request was answered completely."""
    ends = sorted(o.ended for o in outcomes if o.complete and start <= o.ended <= end)
    marks = [start, *ends, end]
    return max(b - a for a, b in itertools.pairwise(marks))


def test_killing_a_nats_node_and_a_process_of_each_service_loses_nothing(
    cluster: Stack,
) -> None:
    urls = [cluster.base_url, cluster.replica_url("ingress-2")]
    plain = Load(urls, MODEL, stream=False, api_key=MASTER, timeout_s=HUNG_S)
    streams = Load(urls, MODEL, stream=True, api_key=MASTER, timeout_s=HUNG_S)
    probe = RpmProbe(urls, cluster.new_key(MASTER, rpm_limit=RPM))
    budgeted = RpmProbe(urls, cluster.new_key(MASTER, max_budget=BUDGET))
    plain.start(loops=3)
    streams.start(loops=2)
    probe.start()
    budgeted.start()
    loads = (plain, streams)
    try:
        wait_until(lambda: plain.finished() >= 20, 30, "the load to flow")
        counted, began = sum(x.finished() for x in loads), time.monotonic()
        wait_until(lambda: sum(x.finished() for x in loads) >= counted + 300, 60, "300 more")
        rate = 300 / (time.monotonic() - began)

        leader = asyncio.run(stream_leader(cluster.nats_url))
        node = "nats" if leader == "igw-1" else f"nats-{leader.removeprefix('igw-')}"
        victims = [node, "ingress-2", "router", "worker-openai", active_accounting(cluster)]
        killed_at = time.monotonic()
        for name in victims:
            cluster.kill(name, signal.SIGKILL)
        after = sum(x.finished() for x in loads)
        wait_until(
            lambda: sum(x.finished() for x in loads) >= after + 200, 90, "the load to recover"
        )
        recovered_at = time.monotonic()
    finally:
        probe.stop()
        budgeted.stop()
        for load in loads:
            load.stop()

    outcomes = plain.accepted() + streams.accepted()
    pause = longest_pause(outcomes, killed_at - 1, recovered_at)
    errors = Counter(o.error[:120] for o in outcomes if o.error)
    print(
        f"\nscale-out: {rate:.0f} requests/s before the kills; longest pause without an "
        f"answer {pause:.2f}s; {len(outcomes)} accepted, errors {dict(errors)}, refused "
        f"{dict(plain.refused + streams.refused)}; rpm probe {len(probe.admitted)} admitted, "
        f"others {dict(probe.other)}; budget probe {len(budgeted.admitted)} admitted, "
        f"others {dict(budgeted.other)}"
    )

    slow = [o for o in outcomes if o.ended - o.started > SLOWEST_S or o.error == "timed out"]
    assert not slow, f"requests hung: {slow[:3]}"
    # not streaming, a 200 is the whole answer; every other answer is an OpenAI error
    assert all(o.complete for o in plain.accepted() if o.status == 200)
    refusals = [o for o in outcomes if o.status != 200]
    assert all(o.status in (429, 502, 503, 504) for o in refusals), refusals[:3]
    # a stream ends complete, or, if it was open when its ingress or worker was killed,
    # with an error event (its ingress's: with a cut connection)
    cut = [o for o in streams.accepted() if o.status == 200 and not o.complete]
    open_at_kill = [o for o in cut if o.started < killed_at < o.ended]
    assert cut == open_at_kill, f"streams lost: {[o for o in cut if o not in open_at_kill][:3]}"
    for o in cut:
        assert o.error is not None
        assert o.error.startswith("error event") or o.replica == 1, o

    answered = {o.request_id for o in outcomes if o.status == 200 and o.request_id}

    def rows() -> dict[str, tuple[int, int, int]]:
        try:
            result = cluster.sql(
                "SELECT request_id, count(), uniqExact(attempt), countIf(final) FROM requests "
                f"WHERE model = '{MODEL}' GROUP BY request_id"
            )
        except AssertionError:  # the standby is taking over
            return {}
        return {r[0]: (int(r[1]), int(r[2]), int(r[3])) for r in result}

    try:
        wait_until(lambda: answered <= rows().keys(), 60, "a usage row for every answered request")
    except AssertionError:
        missing = answered - rows().keys()
        state = asyncio.run(usage_consumer(cluster.nats_url, missing))
        raise AssertionError(f"no usage row for {missing}; {state}") from None
    stored = rows()
    doubled = {i: v for i, v in stored.items() if v[0] != v[1] or v[2] != 1}
    assert not doubled, f"attempts stored twice or without one final row: {doubled}"
    assert probe.most_in_one_minute() <= RPM
    assert len(probe.admitted) >= RPM // 2  # the probe did reach the limit's neighbourhood
    # the budget held across both replicas and the kills, and settled exactly once
    headers = {"authorization": f"Bearer {MASTER}"}
    info = httpx.get(
        f"{cluster.base_url}/key/info", params={"key": budgeted.key}, headers=headers, timeout=10
    ).json()
    token = info["key"]
    query = f"SELECT count(), sum(cost_usd) FROM requests WHERE final AND key_id = '{token}'"

    def budget_settled() -> bool:
        count = int(cluster.sql(query)[0][0])
        now = httpx.get(
            f"{cluster.base_url}/key/info", params={"key": token}, headers=headers, timeout=10
        ).json()["info"]
        spent = float(cluster.sql(query)[0][1] or 0)
        return count >= len(budgeted.admitted) and abs(now["spend"] - spent) < 1e-9

    wait_until(budget_settled, 60, "the budgeted key's spend to settle")
    assert float(cluster.sql(query)[0][1]) <= BUDGET
    assert len(budgeted.admitted) >= 20 and budgeted.other[402] > 0  # it ran out
