"""``igw keys|users|teams``: the admin API from the command line.

They talk to a running ingress (``--url``, default the configured server
address) with the master key or an admin key (``--key``, default
``$IGW_MASTER_KEY``, else ``auth.master_key``). Answers are printed as JSON;
an error prints the gateway's message and exits with status 1.
"""

from __future__ import annotations

import argparse
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from rich.console import Console

from services.runtime.settings import Settings

out = Console()
err = Console(stderr=True)


def add_parsers(sub: Any) -> None:
    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--url", help="the ingress (default: the configured server)")
        parser.add_argument("--key", help="an admin key (default: $IGW_MASTER_KEY)")

    keys = sub.add_parser("keys", help="create, list, inspect and revoke virtual keys")
    keys_sub = keys.add_subparsers(dest="action", required=True)
    create = keys_sub.add_parser("create", help="mint a key (printed once)")
    create.add_argument("--models", help="comma-separated aliases (default: all)")
    create.add_argument("--duration", help="for example 12h or 30d (default: never expires)")
    create.add_argument("--alias", dest="key_alias")
    create.add_argument("--role", choices=["user", "viewer", "admin"], default="user")
    create.add_argument("--user-id")
    create.add_argument("--team-id")
    create.add_argument("--max-budget", type=float, help="USD")
    create.add_argument("--budget-duration", help="budget period, for example 1d or 30d")
    create.add_argument("--rpm-limit", type=int, help="requests per minute")
    create.add_argument("--tpm-limit", type=int, help="tokens per minute")
    create.add_argument("--max-parallel-requests", type=int, help="requests in flight at once")
    for name, help_ in (("list", "list key tokens"), ("info", "a key's record and spend")):
        parser = keys_sub.add_parser(name, help=help_)
        if name == "info":
            parser.add_argument("target", metavar="KEY", help="the key or its token")
        common(parser)
    revoke = keys_sub.add_parser("revoke", help="delete keys")
    revoke.add_argument("keys", nargs="+", help="keys or their tokens")
    for parser in (create, revoke):
        common(parser)

    users = sub.add_parser("users", help="create and inspect users")
    users_sub = users.add_subparsers(dest="action", required=True)
    user_new = users_sub.add_parser("create", help="create a user")
    user_new.add_argument("--user-id")
    user_new.add_argument("--email", dest="user_email")
    user_new.add_argument("--team-id")
    user_new.add_argument("--max-budget", type=float, help="USD")
    user_new.add_argument("--budget-duration", help="budget period, for example 30d")
    user_info = users_sub.add_parser("info", help="a user, its keys and spend")
    user_info.add_argument("user_id")

    teams = sub.add_parser("teams", help="create and inspect teams")
    teams_sub = teams.add_subparsers(dest="action", required=True)
    team_new = teams_sub.add_parser("create", help="create a team")
    team_new.add_argument("--team-id")
    team_new.add_argument("--alias", dest="team_alias")
    team_new.add_argument("--max-budget", type=float, help="USD")
    team_new.add_argument("--budget-duration", help="budget period, for example 30d")
    team_new.add_argument("--rpm-limit", type=int, help="requests per minute, all its keys")
    team_new.add_argument("--tpm-limit", type=int, help="tokens per minute, all its keys")
    team_info = teams_sub.add_parser("info", help="a team, its members and keys")
    team_info.add_argument("team_id")
    for parser in (user_new, user_info, team_new, team_info):
        common(parser)


def _call(
    settings: Settings, args: argparse.Namespace, method: str, path: str, body: Any = None
) -> int:
    base = args.url or f"http://{settings.server.host}:{settings.server.port}"
    master = settings.auth.master_key.get_secret_value() if settings.auth.master_key else None
    key = args.key or os.environ.get("IGW_MASTER_KEY") or master
    headers = {"content-type": "application/json"}
    if key:
        headers["authorization"] = f"Bearer {key}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            out.print_json(reply.read().decode())
            return 0
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        try:
            message = json.loads(detail)["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = detail or exc.reason
        err.print(f"[red]{exc.code}[/] {message}", markup=True, highlight=False)
        return 1
    except urllib.error.URLError as exc:
        err.print(f"[red]cannot reach {base}:[/] {exc.reason}")
        return 1


def _fields(args: argparse.Namespace, names: tuple[str, ...]) -> dict[str, Any]:
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def keys_command(settings: Settings, args: argparse.Namespace) -> int:
    if args.action == "create":
        body = _fields(
            args,
            ("duration", "key_alias", "role", "user_id", "team_id", "max_budget",
             "budget_duration", "rpm_limit", "tpm_limit", "max_parallel_requests"),
        )  # fmt: skip
        if args.models:
            body["models"] = [m.strip() for m in args.models.split(",") if m.strip()]
        return _call(settings, args, "POST", "/key/generate", body)
    if args.action == "list":
        return _call(settings, args, "GET", "/key/list")
    if args.action == "info":
        return _call(
            settings, args, "GET", "/key/info?" + urllib.parse.urlencode({"key": args.target})
        )
    return _call(settings, args, "POST", "/key/delete", {"keys": args.keys})


def users_command(settings: Settings, args: argparse.Namespace) -> int:
    if args.action == "create":
        body = _fields(args, ("user_id", "user_email", "team_id", "max_budget", "budget_duration"))
        return _call(settings, args, "POST", "/user/new", body)
    query = urllib.parse.urlencode({"user_id": args.user_id})
    return _call(settings, args, "GET", f"/user/info?{query}")


def teams_command(settings: Settings, args: argparse.Namespace) -> int:
    if args.action == "create":
        body = _fields(
            args,
            ("team_id", "team_alias", "max_budget", "budget_duration", "rpm_limit", "tpm_limit"),
        )
        return _call(settings, args, "POST", "/team/new", body)
    query = urllib.parse.urlencode({"team_id": args.team_id})
    return _call(settings, args, "GET", f"/team/info?{query}")
