"""One blocking XREAD, in one task, for every job stream this API process relays.

A read per stream costs a Redis round trip per chunk per client; one read over all of them returns the entries
of many streams at once. A stream followed while the read blocks wakes it through a wake-up stream of this
process's own.

Backpressure: a tail holds at most about its buffer's bytes (entries delivered, plus those its relay is still
sending). Past half of it the tail is left out of the read until the relay has sent what it took, and the
read's COUNT is cut so that no tail gets more entries than its room fits (judged by its largest entry so far).
A slow client thus leaves its stream's rest in Redis and costs no other stream a thing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

from shared.messages import StreamMessage
from shared.redis import PackedConnection

logger = logging.getLogger(__name__)

Entry = tuple[bytes, StreamMessage]

READ_COUNT = 512
FIRST_READ_COUNT = 16  # entries of a tail whose entry sizes are not known yet
ENTRY_OVERHEAD = 256  # bytes an entry costs in memory beyond its data
MIN_READ_SPACING = 0.001  # once reads return BUSY_READ streams or more, one a millisecond, many entries each
BUSY_READ = 4
BLOCK_MS = 5_000
WAKE_TTL_MS = 3_600_000


class Tail:
    """The entries of one followed stream, after a given entry id, as the hub delivers them."""

    def __init__(self, hub: StreamHub, key: bytes, after: bytes, buffer_bytes: int) -> None:
        self._hub = hub
        self.key = key
        self.last_id = after
        self._entries: list[Entry] = []
        self._arrived = asyncio.Event()
        self._buffer_bytes = buffer_bytes
        self._delivered_bytes = 0  # in ``_entries``
        self._taken_bytes = 0  # handed over by the last read, the relay still sending them
        self._largest_entry = 0
        self.heard_at = time.monotonic()  # the last delivery, or the end of a pause for backpressure

    @property
    def read_count(self) -> int:
        """How many entries the hub's next read may bring: 0 while the tail holds over half its buffer."""
        held = self._delivered_bytes + self._taken_bytes
        if held > self._buffer_bytes // 2:
            return 0
        if not self._largest_entry:
            return FIRST_READ_COUNT
        return max(1, min(READ_COUNT, (self._buffer_bytes - held) // self._largest_entry))

    def deliver(self, entries: list[tuple[bytes, list[bytes]]]) -> None:
        self.last_id = entries[-1][0]
        for entry_id, fields in entries:
            message = StreamMessage.from_fields(fields)
            size = len(message.data) + ENTRY_OVERHEAD
            self._delivered_bytes += size
            self._largest_entry = max(self._largest_entry, size)
            self._entries.append((entry_id, message))
        self.heard_at = time.monotonic()
        self._arrived.set()

    async def read(self, block_for: float) -> list[Entry]:
        """What arrived since the last read, waiting up to ``block_for`` seconds; [] if nothing came.
        Calling it says that the entries the last read handed over are sent: the hub may read more."""
        paused = not self.read_count
        self._taken_bytes = 0
        if paused and self.read_count:
            self.heard_at = time.monotonic()  # the API, not the worker, was silent meanwhile
            await self._hub.resume(self)
        if not self._entries:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(block_for, 0.0)):
                    await self._arrived.wait()
        self._arrived.clear()
        entries, self._entries = self._entries, []
        self._taken_bytes, self._delivered_bytes = self._delivered_bytes, 0
        return entries

    def close(self) -> None:
        self._hub.unfollow(self)


class StreamHub:
    def __init__(self, redis: Redis, wake_prefix: str, buffer_bytes: int) -> None:
        """``buffer_bytes``: about what each followed stream may hold in memory (see the module's docstring)."""
        self._redis = redis
        self._buffer_bytes = buffer_bytes
        self._reads = PackedConnection(redis)
        self._wake_key = f"{wake_prefix}{uuid.uuid4().hex}".encode()
        self._wake_last = b"0-0"
        self._tails: dict[bytes, Tail] = {}
        self._reading: dict[Tail, int] | None = None  # the tails of the read in progress, and their counts
        self._followed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._read_forever())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._reads.close()
        with contextlib.suppress(RedisError):
            await self._redis.delete(self._wake_key)

    def follow(self, key: str, after: bytes = b"0-0") -> Tail:
        """Start following ``key`` from the entry after ``after``; the read in progress sees it once ``wake``
        has run."""
        tail = Tail(self, key.encode(), after, self._buffer_bytes)
        self._tails[tail.key] = tail
        self._followed.set()
        return tail

    def wake(self, pipe: Pipeline) -> None:
        """Add to ``pipe`` the write that interrupts the read in progress, so that it takes new streams in."""
        pipe.xadd(self._wake_key, {b"k": b"follow"}, maxlen=100, approximate=True)
        pipe.pexpire(self._wake_key, WAKE_TTL_MS)

    async def resume(self, tail: Tail) -> None:
        """Have ``tail`` read again, now that its relay has taken what it held: wake the read in progress if
        it left the tail out (if the wake fails, the read's BLOCK timeout ends it)."""
        if self._reading is None or tail in self._reading:
            return
        with contextlib.suppress(RedisError):
            async with self._redis.pipeline(transaction=False) as pipe:
                self.wake(pipe)
                await pipe.execute()

    def unfollow(self, tail: Tail) -> None:
        if self._tails.get(tail.key) is tail:
            del self._tails[tail.key]

    async def _read_forever(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = 0.05
        read_at = 0.0
        busy = False
        while True:
            if not self._tails:
                self._followed.clear()
                await self._followed.wait()
            if busy:
                await asyncio.sleep(max(0.0, read_at + MIN_READ_SPACING - loop.time()))
            read_at = loop.time()
            self._reading = counts = {
                tail: count for tail in self._tails.values() if (count := tail.read_count)
            }
            keys = [self._wake_key, *(tail.key for tail in counts)]
            after = [self._wake_last, *(tail.last_id for tail in counts)]
            try:
                result = await self._read(keys, after, min(counts.values(), default=READ_COUNT))
            except RedisError as exc:
                logger.warning("reading the job streams failed (%s); retrying in %.2fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            finally:
                self._reading = None
            backoff = 0.05
            busy = len(result) >= BUSY_READ
            for key, entries in result:
                if key == self._wake_key:
                    self._wake_last = entries[-1][0]
                elif (tail := self._tails.get(key)) is not None:
                    tail.deliver(entries)

    async def _read(self, keys: list[bytes], after: list[bytes], count: int) -> list[tuple[bytes, list[Any]]]:
        """XREAD's raw reply: redis-py's parsing of it into dicts costs more than the rest of the relay."""
        command = (b"XREAD", b"COUNT", count, b"BLOCK", BLOCK_MS, b"STREAMS", *keys, *after)
        (reply,) = await self._reads.execute([command])
        if isinstance(reply, RedisError):
            raise reply
        return reply or []
