"""Builds and runs the arq worker."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import orjson
import uvloop
from arq import Worker
from arq.connections import ArqRedis

from shared.config import Settings
from shared.keys import RedisKeys
from shared.redis import connect
from worker.control import ControlListener
from worker.deps import DEPS_KEY, WorkerDeps
from worker.jobs import chat_completions

logger = logging.getLogger(__name__)


class ImmediatePickupWorker(Worker):
    """An arq worker that polls its queue as soon as the API publishes a wake-up, not every ``poll_delay``.

    Between wake-ups it polls every ``idle_poll`` seconds as a fallback (a missed message, a job deferred).
    It also polls when a job ends while it was full, so that a queued job does not wait for the next poll.
    """

    def __init__(self, *args: Any, wake: asyncio.Event, idle_poll: float, **kwargs: Any) -> None:
        super().__init__(*args, poll_delay=0, **kwargs)
        self._wake = wake
        self._idle_poll = idle_poll

    async def _poll_iteration(self) -> None:
        self._wake.clear()
        await super()._poll_iteration()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), self._idle_poll)

    def _release_sem_dec_counter_on_complete(self) -> None:
        was_full = self.job_counter >= self.max_jobs
        super()._release_sem_dec_counter_on_complete()
        if was_full:
            self._wake.set()


def build_worker(settings: Settings, redis: ArqRedis) -> ImmediatePickupWorker:
    keys = RedisKeys(settings.key_prefix)
    control = ControlListener(redis, keys.control)

    async def on_startup(ctx: dict[str, Any]) -> None:
        ctx[DEPS_KEY] = await WorkerDeps.start(settings, redis, control)
        logger.info("worker %s ready on queue %s", ctx[DEPS_KEY].worker_id, keys.queue)

    async def on_shutdown(ctx: dict[str, Any]) -> None:
        deps = ctx.get(DEPS_KEY)
        if deps is not None:
            await deps.close()

    return ImmediatePickupWorker(
        functions=[chat_completions],
        queue_name=keys.queue,
        redis_pool=redis,
        on_startup=on_startup,
        on_shutdown=on_shutdown,
        wake=control.wake,
        idle_poll=settings.worker_idle_poll,
        max_jobs=settings.worker_max_jobs,
        queue_read_limit=max(settings.worker_max_jobs, 100),
        job_timeout=settings.job_timeout,
        max_tries=1,
        keep_result=0,
        job_serializer=orjson.dumps,
        job_deserializer=orjson.loads,
        log_results=False,
    )


def run_worker(settings: Settings) -> None:
    async def serve() -> None:
        redis = await connect(settings.redis_url, RedisKeys(settings.key_prefix))
        worker = build_worker(settings, redis)
        try:
            await worker.async_run()
        finally:
            await worker.close()

    with contextlib.suppress(asyncio.CancelledError):
        uvloop.run(serve())
