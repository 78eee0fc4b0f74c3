"""Usage records in a SQL database (shared/recording/engine.py): written in batches
(shared/recording/writes.py), read by the queries of shared/recording/reads.py."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.recording.engine import create_engine
from shared.recording.reads import RecordReads
from shared.recording.records import Record
from shared.recording.schema import TABLES
from shared.recording.writes import Batch, write_batch


class RecordStore(RecordReads):
    """Reads and writes usage records. The schema must exist: apply ``shared.recording.migrate.upgrade``
    first. ``engine_options`` go to ``create_engine`` (``sqlite_busy_timeout``, SQLAlchemy's pool options)."""

    def __init__(self, url: str, **engine_options: Any) -> None:
        self.engine: AsyncEngine = create_engine(url, **engine_options)
        self._postgres = self.engine.dialect.name == "postgresql"
        self._insert = postgresql.insert if self._postgres else sqlite.insert

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    async def close(self) -> None:
        await self.engine.dispose()

    async def healthy(self) -> bool:
        """Whether the database answers and has the tables (never raises)."""
        try:
            async with self.engine.connect() as connection:
                for table in TABLES:
                    await connection.execute(sa.select(table.c.id).where(sa.false()))
        except Exception:
            return False
        return True

    # -- writing --

    async def write(self, records: Sequence[Record]) -> None:
        """Stores ``records`` in one transaction. Raises InvalidRecord (before touching the database) for
        a record no database could hold, and the database's errors as they come."""
        batch = Batch(records, scrub=self._postgres)
        if batch.empty:
            return
        async with self.engine.begin() as connection:
            await write_batch(connection, batch, self._insert)
