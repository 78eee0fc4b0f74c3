"""Drains the outbox (shared/recording/outbox.py) into the database: every worker runs a ``RecordDrainer``,
a consumer of one consumer group, so records are written whichever worker made them.

A batch read from the outbox is written in one transaction and acknowledged (and deleted) only after the
commit. While the database is unavailable the batch is kept, retried ``retry_initial`` seconds after the first
failure, doubling up to ``retry_max``, and reclaimed on each retry so that no other consumer takes it; the
rest waits in the outbox. The entries of a consumer that died are claimed by another once idle for
``claim_idle`` seconds. Writing is idempotent (see shared/recording/writes.py): an entry written twice, by a
consumer that died before acknowledging it and by the one that claimed it, is stored once.

It also ends the interceptions whose worker died (``Outcome.WORKER_LOST``, see shared/recording/lost.py).

Its ``writer`` (shared/recording/record_writer.py) counts what it wrote, failed to write and had refused; a
refused record is acknowledged like a written one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from pydantic import ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from shared.keys import RedisKeys
from shared.recording.lost import end_lost_interceptions
from shared.recording.outbox import parse
from shared.recording.record_writer import RecordWriter
from shared.recording.records import Record
from shared.recording.store import RecordStore

logger = logging.getLogger(__name__)

GROUP = "aibridge-recorders"
_Entries = list[tuple[bytes, dict[bytes, bytes]]]


class RecordDrainer:
    def __init__(
        self,
        redis: Redis,
        store: RecordStore,
        keys: RedisKeys,
        consumer: str,
        *,
        maxlen: int,
        heartbeat_timeout: float,
        claim_idle: float = 30.0,
        batch_size: int = 500,
        block: float = 1.0,
        retry_initial: float = 0.5,
        retry_max: float = 10.0,
    ) -> None:
        if batch_size < 1 or block <= 0 or claim_idle <= 0:
            raise ValueError("need batch_size >= 1, block > 0 and claim_idle > 0")
        if retry_initial <= 0 or retry_max < retry_initial:
            raise ValueError("need 0 < retry_initial <= retry_max")
        self._redis = redis
        self.writer = RecordWriter(store)
        self._keys = keys
        self._consumer = consumer
        self._maxlen = maxlen
        self._heartbeat_timeout = heartbeat_timeout
        self._claim_idle = claim_idle
        self._batch_size = batch_size
        self._block_ms = max(1, int(block * 1000))
        self._retry_initial = retry_initial
        self._retry_max = max(retry_initial, min(retry_max, claim_idle / 2))  # reclaimed before it idles
        self._batch: list[Record] = []
        self._claim_cursor = b"0-0"
        self._next_claim = 0.0
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self._backlog_warned = False
        self._redis_failing = False

    def start(self) -> None:
        """Starts draining and sweeping (in the running event loop)."""
        if not self._tasks:
            loop = asyncio.get_running_loop()
            self._tasks = [
                loop.create_task(self._drain_forever(), name="usage-recording"),
                loop.create_task(self._sweep_forever(), name="usage-recording-sweep"),
            ]
            for task in self._tasks:
                task.add_done_callback(_report_crash)

    async def close(self, timeout: float = 10) -> None:  # noqa: ASYNC109 - a bound on flushing, not on the call
        """Stops, letting the batch in hand and then what else the outbox holds be written for at most
        ``timeout`` seconds in all; what is not acknowledged stays in the outbox for another consumer. Leaves
        the group if it holds no entries."""
        self._closing = True
        deadline = time.monotonic() + timeout
        if self._tasks:
            drain, sweep = self._tasks
            sweep.cancel()
            if not self._batch:  # only waiting for entries
                drain.cancel()
            with contextlib.suppress(TimeoutError, asyncio.CancelledError, Exception):  # a crash: logged
                await asyncio.wait_for(drain, timeout)  # cancelled on timeout
            await asyncio.gather(sweep, return_exceptions=True)
            with contextlib.suppress(TimeoutError, RedisError):
                async with asyncio.timeout(deadline - time.monotonic()):
                    await self._drain_the_rest()
        with contextlib.suppress(RedisError):
            held = await self._redis.xpending_range(self._keys.records, GROUP, "-", "+", 1, self._consumer)
            if not held:
                await self._redis.xgroup_delconsumer(self._keys.records, GROUP, self._consumer)

    # -- reading the outbox --

    async def _drain_forever(self) -> None:
        while not self._closing:
            try:
                entries = await self._next_entries()
            except RedisError as exc:
                self._redis_trouble(exc)
                await asyncio.sleep(self._retry_max)
                continue
            if self._redis_failing:
                self._redis_failing = False
                logger.warning("usage recording: the outbox answers again")
            if entries:
                await self._drain(entries)

    async def _next_entries(self) -> _Entries:
        """The entries of dead consumers when it is time to look for them, else new ones (waiting for some
        at most ``block``)."""
        now = time.monotonic()
        if now >= self._next_claim:
            claimed = await self._claim()
            if claimed:
                return claimed
        return await self._new_entries(self._block_ms)

    async def _drain_the_rest(self) -> None:
        """Writes what the outbox holds now (a stopping worker's own last records among it), while the
        database takes it."""
        while (entries := await self._new_entries(None)) and await self._drain(entries):
            pass

    async def _new_entries(self, block_ms: int | None) -> _Entries:
        """Entries no consumer has read yet, waiting at most ``block_ms`` for some (None: not at all)."""
        try:
            reply = await self._redis.xreadgroup(
                GROUP, self._consumer, {self._keys.records: ">"}, count=self._batch_size, block=block_ms
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self._create_group()
            return []
        return [entry for _, entries in reply or [] for entry in entries]

    async def _create_group(self) -> None:
        try:  # from the first entry: records appended before any worker ran are drained too
            await self._redis.xgroup_create(self._keys.records, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _claim(self) -> _Entries:
        """The next entries (one ``XAUTOCLAIM`` step) that a consumer has held for ``claim_idle`` seconds
        without acknowledging them: it died. After a full scan, consumers that hold nothing and have been
        silent as long are removed, and the next scan waits ``claim_idle / 2``."""
        try:
            cursor, entries, *_ = await self._redis.xautoclaim(
                self._keys.records,
                GROUP,
                self._consumer,
                int(self._claim_idle * 1000),
                start_id=self._claim_cursor,
                count=self._batch_size,
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self._create_group()
            return []
        self._claim_cursor = cursor
        if cursor in (b"0-0", "0-0"):
            self._next_claim = time.monotonic() + self._claim_idle / 2
            await self._forget_silent_consumers()
        if entries:
            logger.warning("usage recording: took over %d records of a stopped worker", len(entries))
        return [(entry_id, fields) for entry_id, fields in entries if fields]

    async def _forget_silent_consumers(self) -> None:
        for consumer in await self._redis.xinfo_consumers(self._keys.records, GROUP):
            name, pending, idle = (consumer.get(key) for key in ("name", "pending", "idle"))
            if pending == 0 and (idle or 0) > self._claim_idle * 1000 and name != self._consumer.encode():
                await self._redis.xgroup_delconsumer(self._keys.records, GROUP, name)

    def _redis_trouble(self, exc: RedisError) -> None:
        if not self._redis_failing:
            self._redis_failing = True
            logger.warning("usage recording: cannot read the outbox (%s); retrying", exc)

    # -- writing a batch --

    async def _drain(self, entries: _Entries) -> bool:
        """Writes the entries' records, then acknowledges and deletes them; leaves them pending (for this
        consumer or, if it stops, another) while the database is unavailable. False if it stopped before
        they were written."""
        ids = [entry_id for entry_id, _ in entries]
        self._batch = []
        for entry_id, fields in entries:
            try:
                self._batch.append(parse(fields))
            except (KeyError, ValidationError) as exc:
                self.writer.rejected += 1
                logger.warning("usage recording: outbox entry %r is not a record: %s", entry_id, exc)
        delay = self._retry_initial
        while not await self.writer.write(self._batch):
            if self._closing:
                self._batch = []
                return False
            await self._keep(ids)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._retry_max)
        self._backlog_warned = False
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.xack(self._keys.records, GROUP, *ids)
                pipe.xdel(self._keys.records, *ids)
                await pipe.execute()
        except RedisError as exc:  # they are delivered again, and written again: stored once
            logger.warning("usage recording: could not acknowledge %d written records: %s", len(ids), exc)
        return True

    async def _keep(self, ids: list[bytes]) -> None:
        """Claims the entries in hand again (so that they do not look abandoned), and warns once when the
        outbox nears its cap."""
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.xclaim(self._keys.records, GROUP, self._consumer, 0, ids, justid=True)
                pipe.xlen(self._keys.records)
                _, waiting = await pipe.execute()
        except RedisError as exc:
            self._redis_trouble(exc)
            return
        if waiting >= self._maxlen * 0.9 and not self._backlog_warned:
            self._backlog_warned = True
            logger.warning(
                "usage recording: %d records wait in the outbox (cap %d): past the cap the oldest are dropped",
                waiting,
                self._maxlen,
            )

    # -- ending the interceptions of dead workers --

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_timeout / 2)
            try:
                ended = await end_lost_interceptions(
                    self._redis, self._keys, self._heartbeat_timeout, self._maxlen
                )
            except RedisError as exc:
                self._redis_trouble(exc)
                continue
            if ended:
                logger.warning(
                    "usage recording: %d interceptions of stopped workers ended (worker_lost)", ended
                )


def _report_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        logger.error("usage recording stopped: its writer failed", exc_info=exc)
