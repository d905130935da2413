"""One accounting process per embedded store; a standby takes over when it exits."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from services.accounting.standby import StoreLock, lock_path
from services.accounting.store import StoreUnavailable

HOLD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(60)
"""


def test_the_lock_sits_beside_the_store() -> None:
    assert lock_path("chdb:///data/clickhouse") == Path("/data/clickhouse.accounting.lock")


async def test_a_second_process_fails_at_once_without_standby(tmp_path: Path) -> None:
    path = tmp_path / "store.accounting.lock"
    first = StoreLock(path)
    assert first.try_acquire()
    assert path.read_text().strip() == str(os.getpid())
    with pytest.raises(StoreUnavailable, match="standby"):
        await StoreLock(path).acquire(standby=False, stop=asyncio.Event())
    first.release()
    assert StoreLock(path).try_acquire()


async def test_a_standby_takes_over_when_the_holder_is_killed(tmp_path: Path) -> None:
    path = tmp_path / "store.accounting.lock"
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HOLD, str(path), stdout=asyncio.subprocess.PIPE
    )
    try:
        assert holder.stdout is not None and await holder.stdout.readline() == b"held\n"
        standby = StoreLock(path)
        taking = asyncio.create_task(standby.acquire(standby=True, stop=asyncio.Event()))
        await asyncio.sleep(0.3)
        assert not taking.done()
        holder.kill()  # SIGKILL: the kernel drops the lock with the process
        assert await asyncio.wait_for(taking, timeout=5)
        standby.release()
    finally:
        if holder.returncode is None:
            holder.kill()
        await holder.wait()


async def test_a_standby_told_to_stop_gives_up(tmp_path: Path) -> None:
    path = tmp_path / "store.accounting.lock"
    first = StoreLock(path)
    assert first.try_acquire()
    stop = asyncio.Event()
    waiting = asyncio.create_task(StoreLock(path).acquire(standby=True, stop=stop))
    await asyncio.sleep(0.05)
    stop.set()
    assert await asyncio.wait_for(waiting, timeout=2) is False
    first.release()
