"""Writes to the jobs' streams, coalesced across every job of the worker.

One socket write to Redis per chunk per job is most of a worker's CPU when many streams run (the send
syscall dominates). Jobs hand their writes here instead; whatever arrives while a pipeline is in flight goes
out together in the next one, so a lone write leaves at once and a busy worker batches by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import ConnectionError as RedisConnectionError

Command = Callable[[Pipeline], Any]


class CoalescingWriter:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._queued: list[tuple[list[Command], asyncio.Future[list[Any]]]] = []
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._flush_forever())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for _, done in self._queued:
            if not done.done():
                done.set_exception(RedisConnectionError("the stream writer stopped"))

    async def write(self, commands: list[Command]) -> list[Any]:
        """Run ``commands`` (each adds itself to a pipeline) in the next flush and return their results;
        raises what Redis raised."""
        done: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._queued.append((commands, done))
        self._ready.set()
        return await done

    async def _flush_forever(self) -> None:
        while True:
            await self._ready.wait()
            await asyncio.sleep(0)  # let the other jobs woken in this loop turn queue their writes too
            self._ready.clear()
            batch, self._queued = self._queued, []
            if batch:
                await self._flush(batch)

    async def _flush(self, batch: list[tuple[list[Command], asyncio.Future[list[Any]]]]) -> None:
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for commands, _ in batch:
                    for command in commands:
                        command(pipe)
                results = await pipe.execute(raise_on_error=False)
        except Exception as exc:
            for _, done in batch:
                if not done.done():
                    done.set_exception(exc)
            return
        position = 0
        for commands, done in batch:
            mine = results[position : position + len(commands)]
            position += len(commands)
            if done.done():
                continue
            failed = next((result for result in mine if isinstance(result, Exception)), None)
            if failed is None:
                done.set_result(mine)
            else:
                done.set_exception(failed)
