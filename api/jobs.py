"""Handing interceptions to the workers, and taking them back when the client leaves."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta
from typing import Any

from redis.exceptions import RedisError

from api.state import ApiState
from shared.messages import ChatJob, ControlMessage

logger = logging.getLogger(__name__)

JOB_FUNCTION = "chat_completions"


async def enqueue(state: ApiState, job: ChatJob) -> None:
    """Queue ``job`` for a worker and wake the idle workers. It expires if no worker takes it in time."""
    await state.redis.enqueue_job(
        JOB_FUNCTION,
        job.model_dump(mode="json"),
        _job_id=job.interception_id,
        _expires=timedelta(seconds=state.settings.pickup_timeout),
    )
    await state.redis.publish(state.keys.control, ControlMessage(action="wake").encode())


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
    return ChatJob(
        interception_id=interception_id,
        body=body,
        streaming=body.get("stream") is True,
        user_agent=user_agent,
        enqueued_at=time.time(),
    )
