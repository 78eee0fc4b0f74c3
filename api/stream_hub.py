"""One blocking XREAD, in one task, for every job stream this API process relays.

A read per stream costs a Redis round trip per chunk per client; one read over all of them returns the entries
of many streams at once. A stream followed while the read blocks wakes it through a wake-up stream of this
process's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
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
MIN_READ_SPACING = 0.001  # once reads return BUSY_READ streams or more, one a millisecond, many entries each
BUSY_READ = 4
BLOCK_MS = 5_000
WAKE_TTL_MS = 3_600_000


class Tail:
    """The entries of one followed stream, after a given entry id, as the hub delivers them."""

    def __init__(self, hub: StreamHub, key: bytes, after: bytes) -> None:
        self._hub = hub
        self.key = key
        self.last_id = after
        self._entries: list[Entry] = []
        self._arrived = asyncio.Event()

    def deliver(self, entries: list[tuple[bytes, list[bytes]]]) -> None:
        self.last_id = entries[-1][0]
        self._entries.extend((entry_id, StreamMessage.from_fields(fields)) for entry_id, fields in entries)
        self._arrived.set()

    async def read(self, block_for: float) -> list[Entry]:
        """What arrived since the last read, waiting up to ``block_for`` seconds; [] if nothing came."""
        if not self._entries:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(block_for, 0.0)):
                    await self._arrived.wait()
        self._arrived.clear()
        entries, self._entries = self._entries, []
        return entries

    def close(self) -> None:
        self._hub.unfollow(self)


class StreamHub:
    def __init__(self, redis: Redis, wake_prefix: str) -> None:
        self._redis = redis
        self._reads = PackedConnection(redis)
        self._wake_key = f"{wake_prefix}{uuid.uuid4().hex}".encode()
        self._wake_last = b"0-0"
        self._tails: dict[bytes, Tail] = {}
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
        tail = Tail(self, key.encode(), after)
        self._tails[tail.key] = tail
        self._followed.set()
        return tail

    def wake(self, pipe: Pipeline) -> None:
        """Add to ``pipe`` the write that interrupts the read in progress, so that it takes new streams in."""
        pipe.xadd(self._wake_key, {b"k": b"follow"}, maxlen=100, approximate=True)
        pipe.pexpire(self._wake_key, WAKE_TTL_MS)

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
            keys = [self._wake_key, *self._tails]
            after = [self._wake_last, *(tail.last_id for tail in self._tails.values())]
            try:
                result = await self._read(keys, after)
            except RedisError as exc:
                logger.warning("reading the job streams failed (%s); retrying in %.2fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            backoff = 0.05
            busy = len(result) >= BUSY_READ
            for key, entries in result:
                if key == self._wake_key:
                    self._wake_last = entries[-1][0]
                elif (tail := self._tails.get(key)) is not None:
                    tail.deliver(entries)

    async def _read(self, keys: list[bytes], after: list[bytes]) -> list[tuple[bytes, list[Any]]]:
        """XREAD's raw reply: redis-py's parsing of it into dicts costs more than the rest of the relay."""
        command = (b"XREAD", b"COUNT", READ_COUNT, b"BLOCK", BLOCK_MS, b"STREAMS", *keys, *after)
        (reply,) = await self._reads.execute([command])
        if isinstance(reply, RedisError):
            raise reply
        return reply or []
