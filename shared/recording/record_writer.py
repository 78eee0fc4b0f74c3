"""Writing batches of usage records to the store, telling a database outage (keep the batch, retry) from
records the database refuses while it is up (skipped, each counted, so that one bad record does not stall the
rest).

Counters (attributes, for metrics): ``written`` records stored; ``failures`` batch writes that failed because
the database was unavailable; ``rejected`` records the database refused.
"""

from __future__ import annotations

import logging
import time

import sqlalchemy.exc
from sqlalchemy.exc import DBAPIError, OperationalError

from shared.recording.records import Record
from shared.recording.store import RecordStore

logger = logging.getLogger(__name__)


class RecordWriter:
    """Writes batches to ``store``; an outage is logged once when it starts and once when it ends."""

    def __init__(self, store: RecordStore) -> None:
        self._store = store
        self._outage_since: float | None = None
        self._outage_failures = 0
        self.written = 0
        self.failures = 0
        self.rejected = 0

    async def write(self, batch: list[Record]) -> bool:
        """Writes ``batch``, taking out of it what is stored or refused: False when the database is
        unavailable (what is left in it to be retried)."""
        try:
            await self._store.write(batch)
        except Exception as exc:
            if await self._unavailable(exc):
                self._outage(exc)
                return False
            # the database is up: something in the batch is what it refuses
            return await self._write_one_by_one(batch)
        self._written(len(batch))
        batch.clear()
        return True

    async def _unavailable(self, exc: Exception) -> bool:
        """Whether a failed write is the database's unavailability (keep and retry) rather than a record
        it refuses: connection-level and locking errors are; otherwise, whether it fails a health check."""
        if isinstance(exc, OSError | TimeoutError | OperationalError | sqlalchemy.exc.TimeoutError):
            return True
        if isinstance(exc, DBAPIError) and exc.connection_invalidated:
            return True
        return not await self._store.healthy()

    async def _write_one_by_one(self, batch: list[Record]) -> bool:
        """Writes the batch a record at a time, skipping those the database refuses (each counted; the
        first logged, the others summed up in one line)."""
        refused = 0
        try:
            while batch:
                record = batch[0]
                try:
                    await self._store.write([record])
                except Exception as exc:
                    if await self._unavailable(exc):
                        self._outage(exc)
                        return False
                    self.rejected += 1
                    refused += 1
                    if refused == 1:
                        logger.warning(
                            "usage recording: the database refused a %s record of interception %s: %s",
                            record.kind,
                            record.interception_id,
                            _describe(exc),
                        )
                else:
                    self._written(1)
                batch.pop(0)
            return True
        finally:
            if refused > 1:
                logger.warning("usage recording: %d more records of the same batch refused", refused - 1)

    def _written(self, count: int) -> None:
        self.written += count
        if self._outage_since is not None:
            logger.warning(
                "usage recording: the database is back after %.1f s (%d failed writes)",
                time.monotonic() - self._outage_since,
                self._outage_failures,
            )
            self._outage_since = None

    def _outage(self, exc: Exception) -> None:
        self.failures += 1
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            self._outage_failures = 0
            logger.warning(
                "usage recording: the database is unavailable (%s); keeping records and retrying",
                _describe(exc),
            )
        self._outage_failures += 1


def _describe(exc: BaseException) -> str:
    """One short line: the driver's error when SQLAlchemy wraps one (its own message carries the SQL and
    its parameters: prompts have no place in a log)."""
    cause = getattr(exc, "orig", None) or exc
    text = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
    line = f"{type(cause).__name__}: {text}" if text else type(cause).__name__
    return line[:300]
