"""``igw batch``: the OpenAI Batch API from the command line.

``submit`` uploads a JSON Lines file (``purpose=batch``) and creates a batch
from it; with ``--wait`` it follows the batch with a progress bar until it
ends. ``status``, ``list``, ``cancel`` and ``download`` read, cancel and fetch
batches. Like ``igw keys``, they talk to a running ingress (``--url``, default
the configured server) with ``--key`` (default ``$IGW_MASTER_KEY``, else
``auth.master_key``).

Exit status: 0 on success (for ``submit --wait``: the batch completed); 1 when
the gateway refused a call or the batch ended otherwise; 130 when Ctrl-C
stopped ``--wait`` (the batch keeps running).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import urllib.parse
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from schemas.batch import BATCH_ENDPOINTS, FINISHED
from services.cli.api_client import ApiError, Gateway
from services.cli.batch_progress import follow
from services.runtime.settings import Settings

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def add_parser(sub: Any) -> None:
    batch = sub.add_parser("batch", help="submit, follow and download batches (OpenAI Batch API)")
    actions = batch.add_subparsers(dest="action", required=True)
    submit = actions.add_parser("submit", help="upload a JSONL file and run it as a batch")
    submit.add_argument("file", type=Path, metavar="FILE.jsonl", help="one request per line")
    submit.add_argument("--endpoint", choices=BATCH_ENDPOINTS, default=BATCH_ENDPOINTS[0])
    submit.add_argument(
        "--metadata", action="append", default=[], metavar="KEY=VALUE", help="repeatable"
    )
    submit.add_argument("--wait", action="store_true", help="follow it until it ends")
    status = actions.add_parser("status", help="a batch's Batch object, as JSON")
    listing = actions.add_parser("list", help="the most recent batches, as a table")
    listing.add_argument("--limit", type=int, default=20, help="1 to 100 (default 20)")
    cancel = actions.add_parser("cancel", help="stop a batch; what finished is kept")
    download = actions.add_parser("download", help="a batch's output (or error) file")
    download.add_argument("--errors", action="store_true", help="the error file instead")
    download.add_argument("-o", "--output", type=Path, help="write it here (default: stdout)")
    for parser in (status, cancel, download):
        parser.add_argument("batch_id", metavar="ID")
    for parser in (submit, status, listing, cancel, download):
        parser.add_argument("--url", help="the ingress (default: the configured server)")
        parser.add_argument("--key", help="an API key (default: $IGW_MASTER_KEY)")


def batch_command(settings: Settings, args: argparse.Namespace) -> int:
    master = settings.auth.master_key.get_secret_value() if settings.auth.master_key else None
    gateway = Gateway(
        base=args.url or f"http://{settings.server.host}:{settings.server.port}",
        key=args.key or os.environ.get("IGW_MASTER_KEY") or master,
    )
    try:
        return _ACTIONS[args.action](gateway, args)
    except ApiError as exc:
        status = f"[red]{exc.status}[/] " if exc.status else ""
        err.print(f"{status}{escape(exc.message)}", highlight=False)
        return 1


def submit(gateway: Gateway, args: argparse.Namespace) -> int:
    path: Path = args.file
    metadata = _metadata(args.metadata)
    if isinstance(metadata, str):
        err.print(f"[red]{escape(metadata)}[/]")
        return 1
    if not path.is_file():
        err.print(f"[red]no file {escape(str(path))}[/]")
        return 1
    try:
        uploaded = gateway.upload(path, "batch")
    except ApiError as exc:
        if not exc.status:
            raise
        err.print(f"[red]{escape(path.name)} was refused:[/] {escape(exc.message)}")
        return 1
    body = {
        "input_file_id": uploaded["id"],
        "endpoint": args.endpoint,
        "completion_window": "24h",
        "metadata": metadata or None,
    }
    batch = gateway.call("POST", "/v1/batches", body)
    err.print(f"batch [bold]{batch['id']}[/] created from {escape(path.name)} ({uploaded['id']})")
    if not args.wait:
        out.print_json(data=batch)
        return 0
    return follow(gateway, batch, err, out)


def status(gateway: Gateway, args: argparse.Namespace) -> int:
    out.print_json(data=gateway.call("GET", _batch_path(args.batch_id)))
    return 0


def list_batches(gateway: Gateway, args: argparse.Namespace) -> int:
    page = gateway.call("GET", f"/v1/batches?limit={args.limit}")
    table = Table("id", "status", "completed", "failed", "total", "created")
    for column in table.columns[2:5]:
        column.justify = "right"
    for batch in page["data"]:
        counts = batch.get("request_counts") or {}
        table.add_row(
            batch["id"],
            batch["status"],
            *(str(counts.get(n, 0)) for n in ("completed", "failed", "total")),
            datetime.fromtimestamp(batch["created_at"]).strftime("%Y-%m-%d %H:%M:%S"),
        )
    (out if out.is_terminal else Console(width=200)).print(table)
    if page.get("has_more"):
        err.print(f"[dim]more than {args.limit}; raise --limit (up to 100)[/]")
    return 0


def cancel(gateway: Gateway, args: argparse.Namespace) -> int:
    batch = gateway.call("POST", _batch_path(args.batch_id) + "/cancel")
    out.print_json(data=batch)
    return 0


def download(gateway: Gateway, args: argparse.Namespace) -> int:
    batch = gateway.call("GET", _batch_path(args.batch_id))
    kind = "error" if args.errors else "output"
    file_id = batch.get(f"{kind}_file_id")
    if not file_id:
        err.print(_no_file(batch, kind))
        return 1
    with gateway.stream(f"/v1/files/{urllib.parse.quote(file_id, safe='')}/content") as reply:
        if args.output is None:
            shutil.copyfileobj(reply, sys.stdout.buffer)
            sys.stdout.buffer.flush()
            return 0
        with args.output.open("wb") as sink:
            shutil.copyfileobj(reply, sink)
    err.print(f"wrote the {kind} file {file_id} to {escape(str(args.output))}")
    return 0


def _no_file(batch: dict[str, Any], kind: str) -> str:
    name, state = batch["id"], batch["status"]
    if state not in FINISHED:
        return f"batch {name} is {state}: its files are written when it ends"
    if kind == "error":
        return f"batch {name} has no error file: no request failed"
    if state == "failed":
        return f"batch {name} failed before running: no output file (see igw batch status)"
    return f"batch {name} has no output file: no request succeeded"


def _metadata(pairs: list[str]) -> dict[str, str] | str:
    """``KEY=VALUE`` pairs as a dict, or what is wrong with them."""
    found: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            return f"--metadata takes KEY=VALUE, not {pair!r}"
        found[key] = value
    return found


def _batch_path(batch_id: str) -> str:
    return f"/v1/batches/{urllib.parse.quote(batch_id, safe='')}"


_ACTIONS: dict[str, Callable[[Gateway, argparse.Namespace], int]] = {
    "submit": submit,
    "status": status,
    "list": list_batches,
    "cancel": cancel,
    "download": download,
}
