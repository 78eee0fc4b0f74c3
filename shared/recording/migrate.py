"""Applying the usage records' migrations from code: no ``alembic.ini`` needed where the gateway runs."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import NullPool

from shared.recording.engine import async_url, create_engine

MIGRATIONS = Path(__file__).with_name("migrations")
HEAD = "0005"
# not alembic's default "alembic_version": the records may share a database with an application of its own
VERSION_TABLE = "aibridge_alembic_version"
_PG_LOCK = 0x41494252  # pg_advisory_xact_lock key: concurrent upgrades run one after the other


def alembic_config(url: str | None = None) -> Config:
    """A Config for alembic's ``command`` functions (``upgrade``, ``revision`` for a new migration...)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if url is not None:
        config.set_main_option("sqlalchemy.url", async_url(url).replace("%", "%%"))
    return config


async def upgrade(url: str, revision: str = "head") -> None:
    """Brings the database at ``url`` to ``revision`` (the newest by default), creating a SQLite file if
    there is none. Safe to run from several processes at once: they take a lock and go one at a time."""
    engine = _engine(url)
    try:
        async with engine.connect() as connection:
            if engine.dialect.name == "sqlite":
                await connection.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                await connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_LOCK})")
            await connection.run_sync(_upgrade, alembic_config(url), revision)
            await connection.commit()
    finally:
        await engine.dispose()


def _engine(url: str) -> AsyncEngine:
    """An engine for one connection at a time; FileNotFoundError for a SQLite file in no directory (connecting
    would fail, and aiosqlite's thread could report it after the event loop has closed, as a traceback)."""
    parsed = make_url(async_url(url))
    database = parsed.database
    if parsed.get_backend_name() == "sqlite" and database not in (None, "", ":memory:"):
        directory = Path(database).parent
        if not directory.is_dir():
            raise FileNotFoundError(f"no directory {directory} for the SQLite file {database}")
    return create_engine(url, poolclass=NullPool)


class SchemaBehind(Exception):
    """The database lacks migrations and this process may not apply them; the message names the command."""


async def ensure_schema(url: str, *, auto_migrate: bool) -> bool:
    """Brings the database at ``url`` to the newest revision if it is behind (``upgrade``: concurrent
    processes take turns; True when it was), or, when not ``auto_migrate``, raises SchemaBehind. A revision
    this version does not know (a newer one's, migrations only adding to the schema) is left alone."""
    current = await current_revision(url)
    if current == HEAD or (current is not None and not _known(current)):
        return False
    if not auto_migrate:
        raise SchemaBehind(
            f"the usage database is at revision {current or 'none'}, this version needs {HEAD}: "
            "run `aibridge db upgrade` (or set AIBRIDGE_AUTO_MIGRATE=true)"
        )
    await upgrade(url)
    return True


def _known(revision: str) -> bool:
    try:
        ScriptDirectory.from_config(alembic_config()).get_revision(revision)
    except CommandError:
        return False
    return True


def _upgrade(connection: Connection, config: Config, revision: str) -> None:
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


async def current_revision(url: str) -> str | None:
    """The revision the database at ``url`` is at, None before any."""
    engine = _engine(url)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(_current)
    finally:
        await engine.dispose()


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(
        connection, opts={"version_table": VERSION_TABLE}
    ).get_current_revision()
