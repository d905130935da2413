"""IGW benchmark: direct-to-simulator against through-IGW, in one run.

Starts ``igw up`` on free loopback ports with its own data directory (real
nats-server, every service, the provider simulator), then measures:

1. added latency p50/p99 at 1 request in flight (non-streaming),
2. added time to first token at 1 in flight (streaming),
3. requests/s at N in flight (default 32), with the error count,
4. what tenancy adds at 1 in flight: a virtual key with a budget, rpm, tpm and
   parallel limits (every check a compare-and-set on NATS KV) against the
   master key (no checks) on the same gateway.

Added = through IGW minus direct to the simulator, measured alternately in the
same run with the same client (aiohttp), so client cost cancels out.

    python bench/bench.py [--requests 2000] [--concurrency 32] [--duration 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson
import uvloop
import yaml
from rich.console import Console
from rich.table import Table

console = Console()
BODY = {"model": "sim", "messages": [{"role": "user", "content": "Say hello to the benchmark"}]}
MASTER_KEY = "sk-bench-master-key-0123456789"
LIMITS = {
    "max_budget": 1_000_000.0,
    "rpm_limit": 10_000_000,
    "tpm_limit": 1_000_000_000,
    "max_parallel_requests": 10_000,
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Deployment:
    root: Path
    http_port: int = field(default_factory=free_port)
    sim_port: int = field(default_factory=free_port)
    nats_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        config = {
            "data_dir": str(self.root / "data"),
            "server": {"port": self.http_port},
            "nats": {"url": f"nats://127.0.0.1:{self.nats_port}", "port": self.nats_port,
                     "monitor_port": 0},
            "simulator": {"port": self.sim_port},
            "logging": {"level": "WARNING"},
            "auth": {"master_key": MASTER_KEY},
            "models": [{
                "alias": "sim", "provider": "openai", "deployment": "simulator",
                "base_url": f"http://127.0.0.1:{self.sim_port}/v1", "model": "sim",
                "price": {"input_per_mtok": 0.15, "output_per_mtok": 0.6},
            }],
        }  # fmt: skip
        path = self.root / "igw.yaml"
        path.write_text(yaml.safe_dump(config))
        env = {k: v for k, v in os.environ.items() if not k.startswith("IGW_")}
        log = open(self.root / "igw-up.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "--config", str(path), "up"],
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=self.root,
        )  # fmt: skip
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"igw up exited:\n{(self.root / 'igw-up.log').read_text()}")
            try:
                with urllib.request.urlopen(f"{self.igw}/ready", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise SystemExit("igw up did not become ready within 90 s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    @property
    def igw(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def sim(self) -> str:
        return f"http://127.0.0.1:{self.sim_port}"


class Client:
    def __init__(self, session: aiohttp.ClientSession, key: str = MASTER_KEY) -> None:
        self.session = session
        self.plain = orjson.dumps(BODY)
        self.streaming = orjson.dumps({**BODY, "stream": True})
        self.headers = {"content-type": "application/json", "authorization": f"Bearer {key}"}

    async def complete(self, base: str) -> float:
        start = time.perf_counter()
        async with self.session.post(
            f"{base}/v1/chat/completions", data=self.plain, headers=self.headers
        ) as resp:
            body = await resp.read()
            if resp.status != 200:
                raise RuntimeError(f"{resp.status}: {body[:200]!r}")
        return time.perf_counter() - start

    async def first_token(self, base: str) -> float:
        start = time.perf_counter()
        first = None
        async with self.session.post(
            f"{base}/v1/chat/completions", data=self.streaming, headers=self.headers
        ) as resp:
            if resp.status != 200:
                raise RuntimeError(f"{resp.status}: {(await resp.read())[:200]!r}")
            async for line in resp.content:
                if first is None and b'"content":"' in line and b'"content":""' not in line:
                    first = time.perf_counter() - start
        if first is None:
            raise RuntimeError("stream carried no content")
        return first


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000


async def paired(
    probe: Callable[[str], Awaitable[float]], direct_url: str, through_url: str, n: int
) -> tuple[list[float], list[float]]:
    """``n`` probes each way, alternating which side goes first."""
    direct: list[float] = []
    through: list[float] = []
    for i in range(n):
        first, second = ((direct_url, direct), (through_url, through))
        for base, sink in (first, second) if i % 2 else (second, first):
            sink.append(await probe(base))
    return direct, through


async def load(
    client: Client, base: str, concurrency: int, seconds: float
) -> tuple[int, int, list[float]]:
    done = errors = 0
    latencies: list[float] = []
    stop_at = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done, errors
        while time.perf_counter() < stop_at:
            try:
                latencies.append(await client.complete(base))
                done += 1
            except Exception:  # counted, and reported as errors
                errors += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done, errors, latencies


async def measure(dep: Deployment, args: argparse.Namespace) -> dict[str, float]:
    connector = aiohttp.TCPConnector(limit=args.concurrency * 2, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:
        client = Client(session)
        console.print("warming up ...")
        await paired(client.complete, dep.sim, dep.igw, 300)
        await paired(client.first_token, dep.sim, dep.igw, 100)

        console.print(f"1 in flight, non-streaming: {args.requests} requests each way ...")
        direct, through = await paired(client.complete, dep.sim, dep.igw, args.requests)
        console.print(f"1 in flight, streaming: {args.requests // 2} requests each way ...")
        s_direct, s_through = await paired(client.first_token, dep.sim, dep.igw, args.requests // 2)

        console.print(f"{args.concurrency} in flight for {args.duration:.0f}s each way ...")
        d_done, d_err, _ = await load(client, dep.sim, args.concurrency, args.duration)
        i_done, i_err, i_lat = await load(client, dep.igw, args.concurrency, args.duration)

        keyed = Client(session, await virtual_key(session, dep.igw))
        n = args.requests
        console.print(f"1 in flight, a key with budget and limits: {n} requests each way ...")
        await paired(keyed.complete, dep.igw, dep.igw, 200)
        master, limited = await _paired_clients(client, keyed, dep.igw, n)
    return {
        "master_p50_ms": pct(master, 0.50),
        "keyed_p50_ms": pct(limited, 0.50),
        "tenancy_p50_ms": pct(limited, 0.50) - pct(master, 0.50),
        "tenancy_p99_ms": pct(limited, 0.99) - pct(master, 0.99),
        "direct_p50_ms": pct(direct, 0.50),
        "direct_p99_ms": pct(direct, 0.99),
        "igw_p50_ms": pct(through, 0.50),
        "igw_p99_ms": pct(through, 0.99),
        "added_p50_ms": pct(through, 0.50) - pct(direct, 0.50),
        "added_p99_ms": pct(through, 0.99) - pct(direct, 0.99),
        "added_mean_ms": (statistics.fmean(through) - statistics.fmean(direct)) * 1000,
        "direct_ttft_p50_ms": pct(s_direct, 0.50),
        "igw_ttft_p50_ms": pct(s_through, 0.50),
        "added_ttft_p50_ms": pct(s_through, 0.50) - pct(s_direct, 0.50),
        "added_ttft_p99_ms": pct(s_through, 0.99) - pct(s_direct, 0.99),
        "direct_rps": d_done / args.duration,
        "direct_errors": d_err,
        "igw_rps": i_done / args.duration,
        "igw_errors": i_err,
        "igw_load_p50_ms": pct(i_lat, 0.50) if i_lat else 0.0,
        "igw_load_p99_ms": pct(i_lat, 0.99) if i_lat else 0.0,
    }


async def virtual_key(session: aiohttp.ClientSession, igw: str) -> str:
    """A key whose every limit applies but none refuses."""
    async with session.post(
        f"{igw}/key/generate", json=LIMITS, headers={"authorization": f"Bearer {MASTER_KEY}"}
    ) as resp:
        body = await resp.json()
        if resp.status != 200:
            raise RuntimeError(f"could not create the benchmark key: {body}")
        return str(body["key"])


async def _paired_clients(
    a: Client, b: Client, base: str, n: int
) -> tuple[list[float], list[float]]:
    """``n`` requests with each client against one gateway, alternating who goes first."""
    out_a: list[float] = []
    out_b: list[float] = []
    for i in range(n):
        order = ((a, out_a), (b, out_b)) if i % 2 else ((b, out_b), (a, out_a))
        for client, sink in order:
            sink.append(await client.complete(base))
    return out_a, out_b


def report(r: dict[str, float], args: argparse.Namespace) -> None:
    table = Table(title=f"IGW benchmark ({os.cpu_count()} cores, simulator upstream)")
    table.add_column("measure")
    table.add_column("direct", justify="right")
    table.add_column("through IGW", justify="right")
    table.add_column("added", justify="right")
    table.add_column("target", justify="right")
    table.add_row(
        "latency p50, 1 in flight",
        f"{r['direct_p50_ms']:.2f} ms",
        f"{r['igw_p50_ms']:.2f} ms",
        f"{r['added_p50_ms']:.2f} ms",
        "≤ 2 ms",
    )
    table.add_row(
        "latency p99, 1 in flight",
        f"{r['direct_p99_ms']:.2f} ms",
        f"{r['igw_p99_ms']:.2f} ms",
        f"{r['added_p99_ms']:.2f} ms",
        "≤ 6 ms",
    )
    table.add_row(
        "time to first token p50",
        f"{r['direct_ttft_p50_ms']:.2f} ms",
        f"{r['igw_ttft_p50_ms']:.2f} ms",
        f"{r['added_ttft_p50_ms']:.2f} ms",
        "",
    )
    table.add_row(
        f"requests/s at {args.concurrency} in flight",
        f"{r['direct_rps']:.0f}",
        f"{r['igw_rps']:.0f}",
        "",
        "≥ 800",
    )
    table.add_row(
        "errors under load", f"{r['direct_errors']:.0f}", f"{r['igw_errors']:.0f}", "", "0"
    )
    under_load = f"{r['igw_load_p50_ms']:.1f} / {r['igw_load_p99_ms']:.1f} ms"
    table.add_row(f"latency p50/p99 at {args.concurrency} in flight", "", under_load, "", "")
    table.add_row(
        "auth + budget + limits p50 (virtual key vs master key)",
        f"{r['master_p50_ms']:.2f} ms",
        f"{r['keyed_p50_ms']:.2f} ms",
        f"{r['tenancy_p50_ms']:.2f} ms",
        "≤ 0.5 ms",
    )
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="igw-bench-") as tmp:
        dep = Deployment(Path(tmp))
        console.print("starting igw up ...")
        dep.start()
        try:
            results = uvloop.run(measure(dep, args))
        finally:
            dep.stop()
    report(results, args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
