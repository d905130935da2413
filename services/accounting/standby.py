"""One accounting process per embedded store, and a hot standby for it.

The embedded engine (chDB) may be opened by one process only. Before opening
it, an accounting process takes an exclusive ``flock`` on a file beside the
store (``<store>.accounting.lock``). The lock belongs to the open file, so
the kernel releases it when the process ends in any way, ``kill -9`` included.

Without ``clickhouse.standby`` a second process fails at once with
``StoreUnavailable``, as it always has. With it, the second process waits,
connected to nothing, until the lock frees, then opens the store and takes
over: the usage events the first one held unacked come back to it after the
consumer's ack wait, so nothing is lost and, with the idempotent inserts,
nothing is stored twice. A ClickHouse server needs no lock: its accounting
replicas share the durable consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
from pathlib import Path
from typing import Final

from services.accounting.store import StoreUnavailable

log = logging.getLogger("igw.accounting")

POLL_S: Final = 0.2
"""How often a standby tries the lock (a blocking ``flock`` would pin a thread past exit)."""


def lock_path(dsn: str) -> Path:
    """The lock file of the embedded store named by ``chdb:///abs/path``."""
    store = Path(dsn.removeprefix("chdb://"))
    return store.with_name(f"{store.name}.accounting.lock")


class StoreLock:
    """The exclusive right to open one embedded store; ``release`` (or the process's
    end) gives it up."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    async def acquire(self, standby: bool, stop: asyncio.Event) -> bool:
        """Take the lock; True once held. Without ``standby`` a held lock raises
        ``StoreUnavailable``; with it, wait for it, or return False when ``stop`` is
        set first."""
        if self.try_acquire():
            return True
        if not standby:
            raise StoreUnavailable(
                f"another accounting process holds the embedded store ({self.path}); only "
                "one may open it (set clickhouse.standby to run this one as its standby)"
            )
        log.info("standing by: another accounting process holds %s; taking over when it exits",
                 self.path)  # fmt: skip
        while not self.try_acquire():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=POLL_S)
            if stop.is_set():
                return False
        log.info("took over the embedded store %s", self.path)
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the file drops the lock
            self._fd = None
