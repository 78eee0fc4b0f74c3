"""Builds and runs the arq worker."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import orjson
import uvloop
from arq.connections import ArqRedis
from arq.worker import func

from shared.config import Settings
from shared.job import BACKGROUND_JOB_FUNCTION, JOB_FUNCTION
from shared.keys import RedisKeys
from shared.redis import connect, wait_until_answers
from shared.redis_url import describe_redis
from shared.upstream import missing_key_warning
from worker.control import ControlListener
from worker.deps import DEPS_KEY, WorkerDeps
from worker.jobs import intercept
from worker.pickup import ListPickupWorker

logger = logging.getLogger(__name__)

CLEANUP_TIMEOUT = 10.0
"""Seconds a stopping worker gives its cleanup (the stopped jobs' error reports, records, deregistration)
after its running jobs had their ``worker_shutdown_timeout``: whatever Redis or the database do, it exits."""


def build_worker(settings: Settings, redis: ArqRedis) -> ListPickupWorker:
    keys = RedisKeys(settings.key_prefix)
    control = ControlListener(redis, keys.control)

    async def on_startup(ctx: dict[str, Any]) -> None:
        ctx[DEPS_KEY] = await WorkerDeps.start(settings, redis, control)
        logger.info("worker %s ready on queue %s", ctx[DEPS_KEY].worker_id, keys.queue)

    async def on_shutdown(ctx: dict[str, Any]) -> None:
        deps = ctx.get(DEPS_KEY)
        if deps is not None:
            await deps.close()

    return ListPickupWorker(
        functions=[
            func(intercept, name=JOB_FUNCTION),
            func(intercept, name=BACKGROUND_JOB_FUNCTION, timeout=settings.background_job_timeout),
        ],
        queue_name=keys.queue,
        redis_pool=redis,
        on_startup=on_startup,
        on_shutdown=on_shutdown,
        pending_key=keys.pending,
        idle_poll=settings.worker_idle_poll,
        max_jobs=settings.worker_max_jobs,
        job_timeout=settings.job_timeout,
        job_completion_wait=int(settings.worker_shutdown_timeout),  # SIGTERM: finish running jobs first
        max_tries=1,
        keep_result=0,
        job_serializer=orjson.dumps,
        job_deserializer=orjson.loads,
        log_results=False,
    )


def run_worker(settings: Settings) -> None:
    if (warning := missing_key_warning(settings)) is not None:
        logger.warning(warning)

    async def serve() -> None:
        logger.info("worker on %s", describe_redis(settings.redis_url, settings.key_prefix))
        redis = await connect(settings.redis_url, RedisKeys(settings.key_prefix))
        await wait_until_answers(redis, settings.redis_url)
        worker = build_worker(settings, redis)
        try:
            await worker.async_run()
        finally:
            try:
                async with asyncio.timeout(CLEANUP_TIMEOUT):
                    await worker.close()
            except TimeoutError:
                logger.warning(
                    "the worker's cleanup took over %.0fs: exiting without the rest", CLEANUP_TIMEOUT
                )

    # KeyboardInterrupt: a Ctrl-C while Redis does not answer yet, before arq handles the signal
    with contextlib.suppress(asyncio.CancelledError, KeyboardInterrupt):
        uvloop.run(serve())
