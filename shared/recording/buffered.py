"""A ``Recorder`` that never waits for the database: records go to a bounded buffer, a task writes them.

Counters (attributes, for metrics): ``written`` records stored; ``dropped`` records lost (the oldest when
the buffer is full, and any left when ``close`` runs out of time, or recorded after it); ``failures``
batch writes that failed because the database was unavailable; ``rejected`` records the database refused
while it was up (each logged, then skipped so that one bad record does not stall the rest).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque

import sqlalchemy.exc
from sqlalchemy.exc import DBAPIError, OperationalError

from shared.recording.records import Record
from shared.recording.store import RecordStore

logger = logging.getLogger(__name__)


class BufferedRecorder:
    """Buffers records in memory and writes them to ``store`` in batches of up to ``batch_size``, at most
    ``flush_interval`` seconds after they arrive (sooner when a batch fills).

    The buffer holds up to ``max_buffer`` records waiting, besides the batch being written; when it is
    full the oldest record is dropped. While the database is unavailable the batch is kept and retried,
    ``retry_initial`` seconds after the first failure, doubling up to ``retry_max``; the outage is logged
    once when it starts and once when it ends.
    """

    def __init__(
        self,
        store: RecordStore,
        *,
        max_buffer: int = 10_000,
        batch_size: int = 500,
        flush_interval: float = 0.5,
        retry_initial: float = 0.5,
        retry_max: float = 10.0,
    ) -> None:
        if max_buffer < 1 or batch_size < 1:
            raise ValueError("max_buffer and batch_size must be at least 1")
        if flush_interval < 0 or retry_initial <= 0 or retry_max < retry_initial:
            raise ValueError("need flush_interval >= 0 and 0 < retry_initial <= retry_max")
        self._store = store
        self._max_buffer = max_buffer
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._buffer: deque[Record] = deque()
        self._batch: list[Record] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._closed = False
        self._outage_since: float | None = None
        self._outage_failures = 0
        self._overflowing = False
        self.written = 0
        self.dropped = 0
        self.failures = 0
        self.rejected = 0

    @property
    def pending(self) -> int:
        """Records not written yet: waiting in the buffer or in the batch being written."""
        return len(self._buffer) + len(self._batch)

    def record(self, record: Record) -> None:
        try:
            if self._closed:
                self.dropped += 1
                return
            if len(self._buffer) >= self._max_buffer:
                self._buffer.popleft()
                self.dropped += 1
                if not self._overflowing:
                    self._overflowing = True
                    logger.warning(
                        "usage recording: buffer full (%d records), dropping the oldest", self._max_buffer
                    )
            self._buffer.append(record)
            waiting = len(self._buffer)
            if waiting == 1 or waiting >= self._batch_size:
                self._wake.set()
        except Exception:  # recording must never break the relay
            self.dropped += 1

    def start(self) -> None:
        """Starts writing (in the running event loop); records taken before are kept for it."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="usage-recording")
            self._task.add_done_callback(_report_crash)

    async def close(self, timeout: float = 10) -> None:  # noqa: ASYNC109 - a bound on flushing, not on the call
        """Writes what is left, waiting at most ``timeout`` seconds, then stops; anything still unwritten
        then (the database being unavailable) is counted as dropped."""
        if self._closing:
            return
        self._closing = True  # records still come in (the ends of cancelled interceptions) and are written
        self._wake.set()
        self.start()
        task = self._task
        if task is None:  # start() above always makes one
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        except Exception:  # the writer crashed: _report_crash logged it
            pass
        self._closed = True
        lost = self.pending
        if lost:
            self.dropped += lost
            self._buffer.clear()
            self._batch = []
            logger.warning("usage recording: %d records not written at shutdown (database unavailable)", lost)

    async def _run(self) -> None:
        delay = self._retry_initial
        while True:
            if not self._batch:
                if not self._buffer:
                    if self._closing:
                        return
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                await self._gather()
                count = min(self._batch_size, len(self._buffer))
                self._batch = [self._buffer.popleft() for _ in range(count)]
            if await self._flush():
                delay = self._retry_initial
            else:
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry_max)

    async def _gather(self) -> None:
        """Waits up to ``flush_interval`` for a full batch: an interception's records come close together."""
        if self._flush_interval <= 0:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._flush_interval):
                while len(self._buffer) < self._batch_size and not self._closing:
                    self._wake.clear()
                    await self._wake.wait()

    async def _flush(self) -> bool:
        """Writes the batch; False (the batch kept) when the database is unavailable."""
        try:
            await self._store.write(self._batch)
        except Exception as exc:
            if await self._unavailable(exc):
                self._outage(exc)
                return False
            # the database is up: something in the batch is what it refuses
            return await self._write_one_by_one()
        self._written(len(self._batch))
        self._batch = []
        return True

    async def _unavailable(self, exc: Exception) -> bool:
        """Whether a failed write is the database's unavailability (keep and retry) rather than a record
        it refuses: connection-level and locking errors are; otherwise, whether it fails a health check."""
        if isinstance(exc, OSError | TimeoutError | OperationalError | sqlalchemy.exc.TimeoutError):
            return True
        if isinstance(exc, DBAPIError) and exc.connection_invalidated:
            return True
        return not await self._store.healthy()

    async def _write_one_by_one(self) -> bool:
        """Writes the batch a record at a time, skipping those the database refuses (each counted; the
        first logged, the others summed up in one line)."""
        refused = 0
        try:
            while self._batch:
                record = self._batch[0]
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
                self._batch.pop(0)
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
        if self._overflowing and len(self._buffer) < self._max_buffer // 2:
            self._overflowing = False

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


def _report_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        logger.error("usage recording stopped: its writer failed", exc_info=exc)


def _describe(exc: BaseException) -> str:
    """One short line: the driver's error when SQLAlchemy wraps one (its own message carries the SQL and
    its parameters: prompts have no place in a log)."""
    cause = getattr(exc, "orig", None) or exc
    text = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
    line = f"{type(cause).__name__}: {text}" if text else type(cause).__name__
    return line[:300]
