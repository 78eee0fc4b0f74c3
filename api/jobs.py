"""Handing interceptions to the workers, and taking them back when the client leaves."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson
from arq.constants import job_key_prefix
from arq.jobs import serialize_job
from opentelemetry import propagate
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

from api.state import ApiState
from api.stream_hub import Tail
from shared.keys import RedisKeys
from shared.messages import ChatJob, ControlMessage

logger = logging.getLogger(__name__)

JOB_FUNCTION = "chat_completions"


class QueueFull(Exception):
    """More jobs wait for a worker than ``max_queue_depth``: the request is shed (HTTP 503)."""

    def __init__(self, depth: int) -> None:
        super().__init__(depth)
        self.depth = depth


def add_job(pipe: Pipeline, keys: RedisKeys, job: ChatJob, *, expires: float) -> None:
    """Add to ``pipe`` what queues ``job``: arq's job key, its queue entry, and its id on the pending list
    the workers block on. The job expires unless a worker takes it within ``expires`` seconds.

    The first command's result is the number of jobs that were waiting before this one."""
    pipe.llen(keys.pending)
    enqueued_ms = int(job.enqueued_at * 1000)
    data = serialize_job(
        JOB_FUNCTION, (job.model_dump(mode="json"),), {}, None, enqueued_ms, serializer=orjson.dumps
    )
    pipe.psetex(job_key_prefix + job.interception_id, int(expires * 1000), data)
    pipe.zadd(keys.queue, {job.interception_id: enqueued_ms})
    pipe.rpush(keys.pending, job.interception_id)


async def enqueue_and_follow(state: ApiState, job: ChatJob) -> Tail:
    """Queue ``job`` and start following its stream, in one round trip to Redis."""
    tail = state.streams.follow(state.keys.stream(job.interception_id))
    try:
        async with state.redis.pipeline(transaction=True) as pipe:
            add_job(pipe, state.keys, job, expires=state.settings.pickup_timeout)
            state.streams.wake(pipe)
            waiting, *_ = await pipe.execute()
        limit = state.settings.max_queue_depth
        if limit and waiting >= limit:
            await _withdraw(state, job.interception_id)
            raise QueueFull(waiting)
    except BaseException:
        tail.close()
        raise
    return tail


async def _withdraw(state: ApiState, interception_id: str) -> None:
    """Take a job back out of the queue (checking the depth in the same round trip as the enqueue keeps the
    common case at one round trip; shedding pays a second)."""
    async with state.redis.pipeline(transaction=True) as pipe:
        pipe.lrem(state.keys.pending, 1, interception_id)
        pipe.zrem(state.keys.queue, interception_id)
        pipe.delete(job_key_prefix + interception_id)
        pipe.set(state.keys.cancelled(interception_id), b"1", ex=int(state.settings.pickup_timeout) + 1)
        await pipe.execute()


async def cancel(state: ApiState, interception_id: str) -> None:
    """Stop the interception wherever it is: before a worker takes it, or while one runs it.

    Shielded: it runs to its end even when called from a request that is itself being cancelled.
    """
    await asyncio.shield(_cancel(state, interception_id))


async def _cancel(state: ApiState, interception_id: str) -> None:
    ttl = int(state.settings.pickup_timeout + state.settings.heartbeat_timeout)
    message = ControlMessage(action="cancel", interception_id=interception_id).encode()
    try:
        async with state.redis.pipeline(transaction=False) as pipe:
            pipe.set(state.keys.cancelled(interception_id), b"1", ex=ttl)
            pipe.publish(state.keys.control, message)
            await pipe.execute()
    except RedisError as exc:
        logger.warning("interception %s: could not cancel: %s", interception_id, exc)


def new_chat_job(interception_id: str, body: dict[str, Any], user_agent: str | None) -> ChatJob:
    trace_context: dict[str, str] = {}
    propagate.inject(trace_context)  # the worker's spans become children of the current one
    return ChatJob(
        trace_context=trace_context,
        interception_id=interception_id,
        body=body,
        streaming=body.get("stream") is True,
        user_agent=user_agent,
        enqueued_at=time.time(),
    )
