"""A real nats-server, the bus topology, and the accounting service in a subprocess."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import TypeVar

from nats.js import JetStreamContext
from nats.js.api import PubAck

from schemas.bus import SqlResult, UsageEvent
from schemas.subjects import HEADER_MSG_ID, attempt_msg_id, usage_subject
from services.accounting.sql_client import run_sql
from services.runtime.settings import Settings

T = TypeVar("T")

COUNT_SQL = "SELECT count(), sum(cost_usd), uniqExact(request_id, attempt) FROM requests"


@dataclass
class AccountingProcess:
    """``python -m services.accounting`` with settings passed as IGW_* variables."""

    settings: Settings
    workdir: Path
    ack_wait_s: float = 2.0
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    logs: list[Path] = field(default_factory=list)

    def start(self) -> None:
        ch = self.settings.clickhouse
        env = {k: v for k, v in os.environ.items() if not k.startswith("IGW_")}
        env.update(
            IGW_NATS__URL=self.settings.nats.url,
            IGW_DATA_DIR=str(self.settings.data_dir),
            IGW_CLICKHOUSE__DSN=self.settings.clickhouse_dsn,
            IGW_CLICKHOUSE__BATCH_SIZE=str(ch.batch_size),
            IGW_CLICKHOUSE__FLUSH_INTERVAL_MS=str(ch.flush_interval_ms),
            IGW_LOGGING__LEVEL="INFO",
        )
        self.starts += 1
        log = self.workdir / f"accounting-{self.starts}.log"
        self.logs.append(log)
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "services.accounting", f"--ack-wait-s={self.ack_wait_s}"],
                cwd=self.workdir,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def terminate(self, timeout: float = 20) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def output(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')}" for p in self.logs)

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"accounting exited with {self.proc.returncode}:\n{self.output()}")


async def eventually(
    probe: Callable[[], Awaitable[T | None]], what: str, within_s: float = 30.0
) -> T:
    """Poll ``probe`` until it returns something other than ``None``; fail after ``within_s``."""
    deadline = time.monotonic() + within_s
    while True:
        value = await probe()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within_s:g} s waiting for {what}")
        await asyncio.sleep(0.02)


async def sql(settings: Settings, query: str) -> SqlResult:
    return await run_sql(settings, query)


async def wait_ready(settings: Settings, service: AccountingProcess) -> None:
    async def answered() -> bool | None:
        service.check_alive()
        return True if (await sql(settings, "SELECT 1")).error is None else None

    await eventually(answered, "the accounting service to answer SQL")


async def totals(settings: Settings) -> tuple[int, Decimal, int]:
    result = await sql(settings, COUNT_SQL)
    assert result.error is None, result.error
    count, cost, unique = result.rows[0]
    return int(count), Decimal(str(cost)), int(unique)


async def publish(
    js: JetStreamContext, events: Sequence[UsageEvent], msg_ids: Sequence[str] | None = None
) -> list[PubAck]:
    ids = msg_ids or [attempt_msg_id(e.request_id, e.attempt) for e in events]
    futures = [
        await js.publish_async(
            usage_subject(e.provider), e.model_dump_json().encode(), headers={HEADER_MSG_ID: i}
        )
        for e, i in zip(events, ids, strict=True)
    ]
    await js.publish_async_completed()
    return [await f for f in futures]
