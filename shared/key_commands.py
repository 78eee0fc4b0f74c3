"""``aibridge keys create|list|revoke``: client keys, kept in the usage database."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from shared.client_keys import ClientKeyStore, InvalidActor, validate_actor
from shared.config import Settings
from shared.recording.engine import create_engine
from shared.recording.migrate import upgrade


class KeyCommandError(Exception):
    """Why a keys command failed; one line for the operator."""


def parse_metadata(pairs: Sequence[str]) -> dict[str, str]:
    """``KEY=VALUE`` pairs as a dict; KeyCommandError for a pair without ``=``."""
    metadata = {}
    for pair in pairs:
        name, separator, value = pair.partition("=")
        if not separator:
            raise KeyCommandError(f"--meta {pair!r}: use KEY=VALUE")
        metadata[name.strip()] = value.strip()
    return metadata


def format_keys(keys: Sequence[dict[str, Any]]) -> str:
    if not keys:
        return "no client keys: make one with `aibridge keys create --actor ID`"
    rows = [["ID", "ACTOR", "METADATA", "CREATED", "REVOKED"]]
    for key in keys:
        metadata = ",".join(f"{name}={value}" for name, value in sorted(key["actor_metadata"].items()))
        revoked = key["revoked_at"]
        rows.append(
            [
                key["id"],
                key["actor_id"],
                metadata or "-",
                f"{key['created_at']:%Y-%m-%d %H:%M}",
                f"{revoked:%Y-%m-%d %H:%M}" if revoked else "-",
            ]
        )
    widths = [max(len(row[index]) for row in rows) for index in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    )


async def _run(settings: Settings, args: argparse.Namespace) -> str:
    if args.action == "create":
        try:
            actor = validate_actor(args.actor, parse_metadata(args.meta))
        except InvalidActor as exc:
            raise KeyCommandError(str(exc)) from None
    logging.getLogger("alembic.runtime.migration").setLevel(logging.WARNING)
    await upgrade(settings.database_url)  # the keys live beside the records, under the same migrations
    engine = create_engine(settings.database_url, poolclass=NullPool)
    store = ClientKeyStore(engine)
    try:
        if args.action == "create":
            made = await store.create(actor)
            print(
                f"aibridge: key {made.id} for actor {actor.id}; it is shown once, store it now",
                file=sys.stderr,
            )
            return made.key
        if args.action == "list":
            return format_keys(await store.list())
        if not await store.revoke(args.id):
            raise KeyCommandError(f"no key {args.id!r} that is not already revoked")
        return f"revoked {args.id}; API instances stop accepting it within {settings.key_cache_ttl:g} s"
    finally:
        await engine.dispose()


def run_keys_command(settings: Settings, args: argparse.Namespace) -> int:
    try:
        print(asyncio.run(_run(settings, args)))
    except KeyCommandError as exc:
        print(f"aibridge: {exc}", file=sys.stderr)
        return 1
    except (SQLAlchemyError, OSError, ValueError) as exc:
        cause = getattr(exc, "orig", None) or exc
        print(f"aibridge: the keys database is unavailable: {type(cause).__name__}: {cause}", file=sys.stderr)
        return 1
    return 0
