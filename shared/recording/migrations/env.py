"""Alembic's environment for the usage records.

``shared.recording.migrate`` runs it on a connection of its own (passed as
``config.attributes["connection"]``); run by the ``alembic`` command instead, it connects to the
``sqlalchemy.url`` of the config with an asyncio engine.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.pool import NullPool

from shared.recording.engine import async_url, create_engine
from shared.recording.migrate import VERSION_TABLE
from shared.recording.schema import metadata

config = context.config


def _configure(**options: object) -> None:
    context.configure(target_metadata=metadata, version_table=VERSION_TABLE, **options)


def _run_on(connection: Connection) -> None:
    _configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


async def _run_with_engine(url: str) -> None:
    engine = create_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run_on)
            await connection.commit()
    finally:
        await engine.dispose()


def _main() -> None:
    url = config.get_main_option("sqlalchemy.url")
    if context.is_offline_mode():
        _configure(url=async_url(url or ""), literal_binds=True, dialect_opts={"paramstyle": "named"})
        with context.begin_transaction():
            context.run_migrations()
        return
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_on(connection)
    else:
        asyncio.run(_run_with_engine(url or ""))


_main()
