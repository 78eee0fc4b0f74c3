"""The ``aibridge`` command: ``api``, ``worker`` and ``up`` (API + worker + Redis on one machine)."""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import logging
import sys
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from shared.config import ConfigError, Settings, load_settings
from shared.local import check_can_listen
from shared.tracing import configure_tracing


def _parser() -> argparse.ArgumentParser:
    config_help = "TOML file of settings (the environment overrides it)"
    parser = argparse.ArgumentParser(prog="aibridge", description="AI gateway")
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {importlib.metadata.version('aibridge')}"
    )
    parser.add_argument("--config", type=Path, help=config_help)
    common = argparse.ArgumentParser(add_help=False)  # also accepted after the command
    common.add_argument("--config", type=Path, help=config_help, default=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (("api", "run the HTTP API"), ("up", "run API, one worker and (if needed) Redis")):
        command = commands.add_parser(name, help=text, parents=[common])
        command.add_argument("--host")
        command.add_argument("--port", type=int)
    commands.add_parser("worker", help="run a worker", parents=[common])
    database = commands.add_parser("db", help="the usage database", parents=[common])
    database.add_argument("action", choices=["upgrade"], help="apply the schema migrations")
    usage = commands.add_parser("usage", help="print token usage", parents=[common])
    usage.add_argument("--since", default="7d", help="e.g. 7d, 24h, or an ISO-8601 time (default 7d)")
    usage.add_argument(
        "--by",
        choices=["actor", "client", "provider", "family", "model"],
        help="group by this alone (default: actor and model)",
    )
    usage.add_argument("--provider", help="the usage of this provider alone (e.g. openai, anthropic)")
    usage.add_argument("--client", help="the usage of this client alone (e.g. claude-code, codex)")
    status = commands.add_parser("status", help="queue, workers and jobs, from Redis", parents=[common])
    status.add_argument("--watch", action="store_true", help="refresh every 2 s until Ctrl-C")
    keys = commands.add_parser("keys", help="client keys (in the usage database)", parents=[common])
    key_actions = keys.add_subparsers(dest="action", required=True)
    create = key_actions.add_parser("create", help="make a key and print it (once)", parents=[common])
    create.add_argument("--actor", required=True, help="the actor id its requests are recorded under")
    create.add_argument(
        "--meta", action="append", default=[], metavar="KEY=VALUE", help="actor metadata (repeatable)"
    )
    key_actions.add_parser("list", help="every key: id, actor, metadata, created, revoked", parents=[common])
    revoke = key_actions.add_parser("revoke", help="stop a key from working", parents=[common])
    revoke.add_argument("id", help="the key's id (as `keys list` shows it)")
    for subcommands in (commands, key_actions):
        for subparser in subcommands.choices.values():
            subparser.set_defaults(subparser=subparser)  # the innermost command's is the one kept
    return parser


def _parse(argv: list[str] | None) -> argparse.Namespace:
    """The arguments; an unknown one is reported with the usage of the command it follows (exit 2)."""
    args, unknown = _parser().parse_known_args(argv)
    if unknown:
        args.subparser.error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    overrides = {name: getattr(args, name, None) for name in ("host", "port")}
    try:
        settings = load_settings(args.config, **{k: v for k, v in overrides.items() if v is not None})
        if args.command in ("api", "up"):
            check_can_listen(settings.host, settings.port)
    except ConfigError as exc:
        print(f"aibridge: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if settings.log_level.lower() != "debug":
        logging.getLogger("arq.worker").setLevel(logging.WARNING)  # its job lines would log request bodies
        logging.getLogger("httpx2").setLevel(logging.WARNING)  # a line per MCP request
        logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    if args.command in ("api", "worker") and (refused := _check_schema(settings)) is not None:
        return refused
    if args.command == "api":
        return _run_api(settings)
    if args.command == "db":
        return _upgrade_database(settings)
    if args.command == "status":
        return _status(settings, watch=args.watch)
    if args.command == "usage":
        return _print_usage(settings, args.since, args.by, args.provider, args.client)
    if args.command == "keys":
        from shared.key_commands import run_keys_command

        return run_keys_command(settings, args)
    if args.command == "worker":
        from worker.main import run_worker

        provider = configure_tracing("aibridge-worker")
        run_worker(settings)
        if provider is not None:
            provider.shutdown()
        return 0
    from shared.local import run_local

    return run_local(settings, args.config)


def _upgrade_database(settings: Settings) -> int:
    from shared.recording.migrate import upgrade

    try:
        asyncio.run(upgrade(settings.database_url))
    except (OSError, ValueError, SQLAlchemyError) as exc:
        cause = getattr(exc, "orig", None) or exc  # SQLAlchemy's own text adds a line of links
        print(f"aibridge: could not migrate the usage database: {cause}", file=sys.stderr)
        return 1
    print("aibridge: the usage database is up to date", file=sys.stderr)
    return 0


def _check_schema(settings: Settings) -> int | None:
    """Migrates a usage database that is behind (unless AIBRIDGE_AUTO_MIGRATE=false: then the exit code 2,
    with one line naming the command to run). A database that does not answer is no reason not to start:
    records wait in the outbox until it does."""
    from shared.recording.migrate import HEAD, SchemaBehind, ensure_schema

    logger = logging.getLogger(__name__)
    logging.getLogger("alembic.runtime.migration").setLevel(logging.WARNING)  # a line per connection
    try:
        if asyncio.run(ensure_schema(settings.database_url, auto_migrate=settings.auto_migrate)):
            logger.info("migrated the usage database to revision %s", HEAD)
    except SchemaBehind as exc:
        print(f"aibridge: {exc}", file=sys.stderr)
        return 2
    except (OSError, SQLAlchemyError) as exc:
        logger.warning(
            "could not check the usage database's schema (%s): records wait in Redis until it answers "
            "and has the schema (`aibridge db upgrade`)",
            type(getattr(exc, "orig", None) or exc).__name__,
        )
    return None


def _print_usage(
    settings: Settings, since: str, by: str | None, provider: str | None, client: str | None
) -> int:
    from shared.recording.report import ReportError, usage_report

    try:
        print(asyncio.run(usage_report(settings.database_url, since, by, provider, client)))
    except ReportError as exc:
        print(f"aibridge: {exc}", file=sys.stderr)
        return 1
    return 0


def _status(settings: Settings, *, watch: bool) -> int:
    from redis.asyncio import Redis
    from redis.exceptions import RedisError

    from shared.keys import RedisKeys
    from shared.redis import connection_pool
    from shared.status import format_status, read_status

    async def show() -> None:
        redis = Redis(
            connection_pool=connection_pool(settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
        )
        try:
            while True:
                status = await read_status(redis, RedisKeys(settings.key_prefix), settings.heartbeat_timeout)
                screen = format_status(status, settings.heartbeat_timeout)
                print(("\x1b[2J\x1b[H" if watch else "") + screen, flush=True)
                if not watch:
                    return
                await asyncio.sleep(2)
        finally:
            await redis.aclose()

    try:
        asyncio.run(show())
    except KeyboardInterrupt:
        return 0
    except (RedisError, OSError) as exc:
        print(f"aibridge: Redis is unavailable: {exc}", file=sys.stderr)
        return 1
    return 0


def _run_api(settings: Settings) -> int:
    import uvicorn

    from api.app import create_app
    from api.http_protocol import http_protocol

    provider = configure_tracing("aibridge-api")
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=http_protocol(settings),  # httptools, with the gateway's read timeouts and error shape
        log_level=settings.log_level,
        timeout_graceful_shutdown=int(settings.api_shutdown_timeout),  # SIGTERM: open streams may finish
    )
    if provider is not None:
        provider.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
