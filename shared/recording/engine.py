"""The database of the usage records (and client keys): a SQLite file (the embedded default) or PostgreSQL,
each through its asyncio driver."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

_ASYNC_SCHEMES = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
}
_PG_CONNECT_TIMEOUT = 10.0


def async_url(url: str) -> str:
    """``url`` with the asyncio driver this store uses: ``sqlite://`` becomes ``sqlite+aiosqlite://``,
    ``postgres://`` and ``postgresql://`` become ``postgresql+asyncpg://``. Raises ValueError for any
    other database."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        raise ValueError(f"not a database URL: {url!r}")
    driver = _ASYNC_SCHEMES.get(scheme.lower())
    if driver is None:
        raise ValueError(
            f"unsupported database URL scheme {scheme!r}: use sqlite+aiosqlite:///path/to/file.db "
            "or postgresql+asyncpg://user:password@host/database"
        )
    return f"{driver}://{rest}"


def create_engine(url: str, *, sqlite_busy_timeout: float = 5.0, **options: Any) -> AsyncEngine:
    """An asyncio engine for ``url`` (see ``async_url``), set up for the store.

    SQLite connections enforce foreign keys, use WAL (an API process reads while workers write) and wait
    up to ``sqlite_busy_timeout`` seconds for another process's write lock; PostgreSQL connections are checked before use (a pool
    survives a database restart) and give up connecting after 10 s.
    """
    url = async_url(url)
    if url.startswith("sqlite"):
        engine = create_async_engine(url, **options)
        busy_ms = max(0, round(sqlite_busy_timeout * 1000))

        def pragmas(dbapi_connection: Any, _: Any) -> None:
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute(f"PRAGMA busy_timeout = {busy_ms}")
                cursor.execute("PRAGMA foreign_keys = ON")
                cursor.execute("PRAGMA journal_mode = WAL")
                cursor.execute("PRAGMA synchronous = NORMAL")
            finally:
                cursor.close()

        sa.event.listen(engine.sync_engine, "connect", pragmas)
        return engine
    options.setdefault("pool_pre_ping", True)
    connect_args = {"timeout": _PG_CONNECT_TIMEOUT, **options.pop("connect_args", {})}
    return create_async_engine(url, connect_args=connect_args, **options)
