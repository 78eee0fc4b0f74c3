"""The worker's end of the control channel: cancellation of running interceptions."""

from __future__ import annotations

import asyncio
import logging

from pydantic import ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.messages import ControlMessage

logger = logging.getLogger(__name__)

CLIENT_GONE = "client gone"
"""The message of the cancellation this listener delivers; other cancellations (a stopping worker, a job
timeout) carry none."""


class ControlListener:
    """Subscribes to the control channel and cancels registered tasks on request."""

    def __init__(self, redis: Redis, channel: str) -> None:
        self._redis = redis
        self._channel = channel
        self._running: dict[str, asyncio.Task[None]] = {}
        self._task: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()

    def register(self, interception_id: str, task: asyncio.Task[None]) -> None:
        self._running[interception_id] = task

    def unregister(self, interception_id: str) -> None:
        self._running.pop(interception_id, None)

    @property
    def running(self) -> int:
        return len(self._running)

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen_forever())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _listen_forever(self) -> None:
        backoff = 0.1
        while True:
            try:
                await self._listen()
            except (RedisError, OSError) as exc:
                backoff = 0.1 if self.subscribed.is_set() else min(backoff * 2, 5.0)
                self.subscribed.clear()
                logger.warning("control channel lost (%s); resubscribing in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)

    async def _listen(self) -> None:
        async with self._redis.pubsub() as pubsub:
            await pubsub.subscribe(self._channel)
            self.subscribed.set()
            async for message in pubsub.listen():
                if message["type"] == "message":
                    self._handle(message["data"])

    def _handle(self, raw: bytes) -> None:
        try:
            message = ControlMessage.decode(raw)
        except ValidationError:
            logger.warning("ignoring a malformed control message")
            return
        task = self._running.get(message.interception_id)
        if task is not None:
            logger.info("interception %s: client gone, cancelling", message.interception_id)
            task.cancel(CLIENT_GONE)
