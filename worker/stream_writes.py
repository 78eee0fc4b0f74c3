"""Writes to the jobs' streams, coalesced across every job of the worker.

One socket write to Redis per chunk per job is most of a worker's CPU when many streams run (the send
syscall dominates). Jobs hand their writes here instead; whatever arrives while a batch is in flight goes
out together in the next one. Once batches carry the writes of BUSY_BATCH jobs or more, they leave at least
MIN_FLUSH_SPACING apart: a lightly loaded worker writes at once, and a busy one sends one batch a millisecond
whatever the number of streams.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from shared.redis import Command, PackedConnection

Batch = list[tuple[list[Command], "asyncio.Future[list[Any]]"]]

STOPPED = "the stream writer stopped"

MIN_FLUSH_SPACING = 0.001
BUSY_BATCH = 4


class CoalescingWriter:
    def __init__(self, redis: Redis) -> None:
        self._connection = PackedConnection(redis)
        self._queued: Batch = []
        self._in_flight: Batch = []
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._flush_forever())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._connection.close()

    async def write(self, commands: list[Command]) -> list[Any]:
        """Run ``commands`` (Redis commands as argument lists) in the next flush and return their raw replies;
        raises what Redis raised, and at once if the writer is not running (never started, stopped, or
        cancelled with the rest of the worker's tasks)."""
        return await self.send(commands)

    def send(self, commands: list[Command]) -> asyncio.Future[list[Any]]:
        """``write`` without waiting: the future of its replies (failed already if the writer is not
        running)."""
        done: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        if self._task is None or self._task.done():
            done.set_exception(RedisConnectionError(STOPPED))
            return done
        self._queued.append((commands, done))
        self._ready.set()
        return done

    async def _flush_forever(self) -> None:
        loop = asyncio.get_running_loop()
        flushed_at = 0.0
        busy = False
        try:
            while True:
                await self._ready.wait()
                # let the other jobs woken in this loop turn (when busy: since the last flush) queue theirs too
                await asyncio.sleep(max(0.0, flushed_at + MIN_FLUSH_SPACING - loop.time()) if busy else 0)
                flushed_at = loop.time()
                self._ready.clear()
                self._in_flight, self._queued = self._queued, []
                busy = len(self._in_flight) >= BUSY_BATCH
                if self._in_flight:
                    await self._flush(self._in_flight)
        finally:  # however the task ends, no write waits for a flush that will never come
            for _, done in [*self._in_flight, *self._queued]:
                if not done.done():
                    done.set_exception(RedisConnectionError(STOPPED))

    async def _flush(self, batch: Batch) -> None:
        try:
            replies = await self._connection.execute(
                [command for commands, _ in batch for command in commands]
            )
        except Exception as exc:
            for _, done in batch:
                if not done.done():
                    done.set_exception(exc)
            return
        position = 0
        for commands, done in batch:
            mine = replies[position : position + len(commands)]
            position += len(commands)
            if done.done():
                continue
            failed = next((reply for reply in mine if isinstance(reply, Exception)), None)
            if failed is None:
                done.set_result(mine)
            else:
                done.set_exception(failed)


class StreamLost(RedisError):
    """The job's stream vanished from Redis while the job wrote it (Redis restarted without its data, or
    was flushed): the events written before may be gone, so the job must not go on as if nothing were
    missing."""

    def __init__(self, key: str) -> None:
        super().__init__(f"the stream {key} is gone from Redis (restarted or flushed)")


@dataclass(frozen=True)
class SentWrite:
    """A write handed to the CoalescingWriter: its replies, once checked."""

    replies: asyncio.Future[list[Any]]
    remembered: list[tuple[Command, Callable[[Any], None] | None]]
    commands: int
    checked_entries: int  # the first replies that are XADDs with NOMKSTREAM
    key: bytes

    async def results(self) -> list[Any]:
        """The replies of what was sent after the entries and their expiry (``also``); StreamLost if the
        stream was gone."""
        replies = await self.replies
        for (_, take_reply), reply in zip(self.remembered, replies, strict=False):
            if take_reply is not None:
                take_reply(reply)
        results = replies[len(self.remembered) :]
        if None in results[: self.checked_entries]:  # NOMKSTREAM: the stream is gone
            raise StreamLost(self.key.decode())
        return results[self.commands :]
