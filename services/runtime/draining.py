"""Leaving a deliver group on shutdown without losing or stranding a message.

The router and the workers hand every JetStream message to its own task. On
SIGTERM, ``MessageHandlers.drain``:

1. stops taking work: the subscription is drained (the server stops delivering;
   what was already on its way still reaches the callback), and every message
   that arrives from then on is naked at once, so another replica takes it now
   rather than after the ack wait;
2. lets the running handlers finish, for up to the grace period;
3. cancels the handlers still running and naks their messages, so JetStream
   redelivers them to another replica straight away. A handler that must not be
   redelivered (its answer had started to reach the client) catches the
   cancellation, settles its message itself and returns normally; the nak that
   follows is then refused by nats-py (already acked) and ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any, Final, Protocol

from nats.aio.msg import Msg

log = logging.getLogger("igw.bus")

CANCEL_WAIT_S: Final = 5.0
"""How long cancelled handlers get to unwind before their messages are naked anyway."""


class Drainable(Protocol):
    async def drain(self) -> None: ...


class MessageHandlers:
    """The handler tasks a consumer has running, each with its message."""

    def __init__(self) -> None:
        self._running: dict[asyncio.Task[None], Msg] = {}
        self.stopping = False

    def __len__(self) -> int:
        return len(self._running)

    async def dispatch(self, msg: Msg, handler: Coroutine[Any, Any, None]) -> None:
        """Run ``handler`` for ``msg`` in its own task; once stopping, nak ``msg`` instead."""
        if self.stopping:
            handler.close()
            with contextlib.suppress(Exception):
                await msg.nak()
            return
        task = asyncio.create_task(handler)
        self._running[task] = msg
        task.add_done_callback(self._done)

    async def drain(self, subscription: Drainable | None, grace_s: float, what: str) -> None:
        """Stop taking messages, wait up to ``grace_s`` for the running handlers, then
        cancel the rest and nak their messages (see the module docstring)."""
        self.stopping = True
        if subscription is not None:
            with contextlib.suppress(Exception):
                await subscription.drain()
        if not self._running:
            return
        log.info("waiting up to %gs for %d %s in hand", grace_s, len(self._running), what)
        _, late = await asyncio.wait(list(self._running), timeout=grace_s)
        if not late:
            return
        log.warning("%d %s did not finish in %gs; handing them back", len(late), what, grace_s)
        given_back = [self._running[task] for task in late]
        for task in late:
            task.cancel()
        await asyncio.wait(late, timeout=CANCEL_WAIT_S)
        for msg in given_back:
            with contextlib.suppress(Exception):  # already acked by its handler
                await msg.nak()

    def _done(self, task: asyncio.Task[None]) -> None:
        self._running.pop(task, None)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("a message handler failed", exc_info=exc)
