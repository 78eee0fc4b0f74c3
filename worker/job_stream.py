"""The writing end of one job's Redis Stream."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

from shared.messages import MessageKind, StreamMessage
from worker.stream_writes import CoalescingWriter, Command

logger = logging.getLogger(__name__)


class JobStream:
    """Appends StreamMessages to the stream of one interception.

    The stream is capped (``MAXLEN ~``) and gets an expiry on its first write (covering a worker that dies
    mid-job) and a shorter one, the retention, once ``done`` is written. ``renew`` goes out with every
    heartbeat and ``release`` with ``done`` (or ``expire``), in the same writes.
    """

    def __init__(
        self,
        writer: CoalescingWriter,
        key: str,
        *,
        maxlen: int,
        retention: float,
        lifetime: float,
        renew: tuple[Command, ...] = (),
        release: tuple[Command, ...] = (),
    ) -> None:
        self._writer = writer
        self._key = key
        self._renew = renew
        self._release = release
        self._maxlen = maxlen
        self._retention_ms = int(retention * 1000)
        self._lifetime_ms = int(lifetime * 1000)
        self._created = False
        self.opened = False

    async def _write(
        self, *messages: StreamMessage, expire_ms: int | None = None, also: tuple[Command, ...] = ()
    ) -> list[Any]:
        commands: list[Command] = [
            partial(_xadd, key=self._key, fields=message.to_fields(), maxlen=self._maxlen)
            for message in messages
        ]
        if expire_ms is None and not self._created:
            expire_ms = self._lifetime_ms
        if expire_ms is not None:
            commands.append(partial(_pexpire, key=self._key, ms=expire_ms))
        results = await self._writer.write([*commands, *also])
        self._created = True
        return results[len(commands) :]

    async def begin(self, cancelled_key: str) -> bool:
        """Write the first heartbeat (the API's sign that a worker took the job); True if the client
        cancelled the job before that."""
        cancelled, *_ = await self._write(
            StreamMessage(kind=MessageKind.HEARTBEAT),
            also=(partial(_exists, key=cancelled_key), *self._renew),
        )
        return bool(cancelled)

    async def heartbeat(self) -> None:
        await self._write(StreamMessage(kind=MessageKind.HEARTBEAT), also=self._renew)

    async def open(self) -> None:
        """Tell the API to start the client's SSE stream (headers, then pings while nothing else flows)."""
        if not self.opened:
            self.opened = True
            await self._write(StreamMessage(kind=MessageKind.OPEN))

    async def chunk(self, data: bytes) -> None:
        message = StreamMessage(kind=MessageKind.CHUNK, data=data)
        if self.opened:
            await self._write(message)
        else:
            self.opened = True
            await self._write(StreamMessage(kind=MessageKind.OPEN), message)

    async def error(self, status: int, body: bytes) -> None:
        """An OpenAI-shaped error: the HTTP answer before the stream opened, an SSE error event after."""
        await self._write(StreamMessage(kind=MessageKind.ERROR, status=status, data=body))

    async def result(self, status: int, body: bytes) -> None:
        await self._write(StreamMessage(kind=MessageKind.RESULT, status=status, data=body))

    async def done(self) -> None:
        await self._write(
            StreamMessage(kind=MessageKind.DONE), expire_ms=self._retention_ms, also=self._release
        )

    async def expire(self) -> None:
        """Shorten the stream's life to the retention without ending it (the client has gone)."""
        await self._writer.write([partial(_pexpire, key=self._key, ms=self._retention_ms), *self._release])

    @contextlib.asynccontextmanager
    async def heartbeats(self, interval: float) -> AsyncIterator[None]:
        """Write a heartbeat every ``interval`` seconds while the block runs."""

        async def beat() -> None:
            while True:
                await asyncio.sleep(interval)
                try:
                    await self.heartbeat()
                except RedisError as exc:
                    logger.warning("heartbeat to %s failed: %s", self._key, exc)

        task = asyncio.create_task(beat())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _xadd(pipe: Pipeline, *, key: str, fields: dict[bytes, bytes], maxlen: int) -> None:
    pipe.xadd(key, fields, maxlen=maxlen, approximate=True)


def _pexpire(pipe: Pipeline, *, key: str, ms: int) -> None:
    pipe.pexpire(key, ms)


def slot_commands(
    slots_key: str, interception_id: str, *, lease: float, owner_key: str, retention: float
) -> tuple[tuple[Command, ...], tuple[Command, ...]]:
    """What renews the interception's concurrency slot (for ``lease`` seconds more, if it still holds one),
    and what releases it and cuts its owner record to the stream's ``retention``: JobStream's ``renew`` and
    ``release``."""
    renew = (partial(_renew_slot, key=slots_key, member=interception_id, lease_ms=int(lease * 1000)),)
    release = (
        partial(_release_slot, key=slots_key, member=interception_id),
        partial(_pexpire, key=owner_key, ms=int(retention * 1000)),
    )
    return renew, release


def _renew_slot(pipe: Pipeline, *, key: str, member: str, lease_ms: int) -> None:
    pipe.zadd(key, {member: int(time.time() * 1000) + lease_ms}, xx=True)


def _release_slot(pipe: Pipeline, *, key: str, member: str) -> None:
    pipe.zrem(key, member)


def _exists(pipe: Pipeline, *, key: str) -> None:
    pipe.exists(key)
