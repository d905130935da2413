"""Following a batch to its end with a live progress bar (``igw batch submit --wait``).

It polls ``GET /v1/batches/{id}`` about every ``POLL_S`` seconds until the
status is final, then prints a summary. A poll that cannot reach the gateway
or gets a 5xx is retried for up to ``GIVE_UP_S`` seconds in a row, so a
restarting ingress does not end the wait; any other refusal does. Ctrl-C
stops waiting, never the batch.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Callable
from typing import Any, Final

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
)
from rich.text import Text

from schemas.batch import FINISHED
from services.cli.api_client import ApiError, Gateway

POLL_S: Final = 0.5
GIVE_UP_S: Final = 30.0
Batch = dict[str, Any]
FILES: Final = (("output", "output_file_id", ""), ("errors", "error_file_id", " --errors"))


class RateColumn(ProgressColumn):
    """Requests answered per second: recent while running, the average once finished."""

    def render(self, task: Task) -> Text:
        speed = _rate(task)
        shown = "-- req/s" if speed is None else f"{speed:.1f} req/s"
        return Text(shown, style="progress.data.speed")


class EtaColumn(ProgressColumn):
    """The time left at that rate; once finished, the time it took."""

    def render(self, task: Task) -> Text:
        if task.finished and task.finished_time is not None:
            return Text(f"took {_clock(task.finished_time)}", style="progress.elapsed")
        speed = _rate(task)
        if task.total is None or not speed:
            return Text("eta -:--", style="progress.remaining")
        left = (task.total - task.completed) / speed
        return Text(f"eta {_clock(left)}", style="progress.remaining")


def follow(gateway: Gateway, batch: Batch, console: Console, out: Console) -> int:
    """Show ``batch``'s progress on ``console`` until it ends, then its summary on
    ``out``; 0 when it completed, 1 when it ended otherwise, 130 on Ctrl-C."""
    batch_id = str(batch["id"])
    progress = Progress(
        TextColumn("{task.fields[state]:<11}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[failed]} failed"),
        RateColumn(),
        EtaColumn(),
        console=console,
    )
    try:
        with progress:
            task = progress.add_task(batch_id, total=None, state=batch["status"], failed=0)
            batch = poll(gateway, batch, lambda b: _show(progress, task, b))
    except KeyboardInterrupt:
        console.print(
            f"\nstopped waiting; batch {batch_id} keeps running. Follow it with "
            f"`igw batch status {batch_id}`, fetch its results with "
            f"`igw batch download {batch_id}` once it has ended, or stop it with "
            f"`igw batch cancel {batch_id}`.",
            highlight=False,
        )
        return 130
    for line in summary(batch):
        out.print(line, highlight=False)
    return 0 if batch["status"] == "completed" else 1


def poll(gateway: Gateway, batch: Batch, show: Callable[[Batch], None]) -> Batch:
    """``batch`` as it is once its status is final, calling ``show`` on every poll."""
    path = f"/v1/batches/{urllib.parse.quote(str(batch['id']), safe='')}"
    failing_since: float | None = None
    while batch["status"] not in FINISHED:
        show(batch)
        time.sleep(POLL_S)
        try:
            batch = gateway.call("GET", path)
            failing_since = None
        except ApiError as exc:
            if 0 < exc.status < 500:
                raise
            failing_since = failing_since or time.monotonic()
            if time.monotonic() - failing_since > GIVE_UP_S:
                raise
    show(batch)
    return batch


def summary(batch: Batch) -> list[str]:
    """Lines (rich markup) saying how ``batch`` ended and where its results are."""
    name, state = batch["id"], batch["status"]
    counts = batch.get("request_counts") or {}
    ended = batch.get(f"{state}_at") or batch.get("completed_at")
    took = f" in {_duration(ended - batch['created_at'])}" if ended else ""
    colour = "green" if state == "completed" else "red"
    lines = [
        f"batch {name} [{colour}]{state}[/]{took}",
        f"  requests  {counts.get('total', 0)} total, {counts.get('completed', 0)} completed, "
        f"{counts.get('failed', 0)} failed",
    ]
    for kind, field, flag in FILES:
        file_id = batch.get(field)
        where = f"{file_id}  (igw batch download {name}{flag})" if file_id else "none"
        lines.append(f"  {kind:<8}  {where}")
    for error in (batch.get("errors") or {}).get("data") or []:
        line = f"line {error['line']}: " if error.get("line") else ""
        lines.append(f"  [red]error[/]     {line}{escape(str(error.get('message')))}")
    return lines


def _show(progress: Progress, task: TaskID, batch: Batch) -> None:
    counts = batch.get("request_counts") or {}
    completed, failed = counts.get("completed", 0), counts.get("failed", 0)
    progress.update(
        task,
        total=counts.get("total") or None,
        completed=completed + failed,
        state=batch["status"],
        failed=failed,
    )


def _duration(seconds: int) -> str:
    if seconds < 1:
        return "under a second"
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


def _rate(task: Task) -> float | None:
    elapsed = task.finished_time if task.finished else task.elapsed
    average = task.completed / elapsed if elapsed and task.completed else None
    return average if task.finished else task.speed or average


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds + 0.5), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02}:{secs:02}" if hours else f"{minutes}:{secs:02}"
