"""Handing interceptions to the workers, and taking them back when the client leaves."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from arq.constants import job_key_prefix
from arq.jobs import SerializationError, serialize_job
from opentelemetry import propagate
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

from api.errors import GatewayError, InvalidRequest
from api.limits import ActorLimited, Limits
from api.state import ApiState
from api.stream_hub import Tail
from shared.background import response_id_of
from shared.breaker import ADMIT_FRAGMENT
from shared.client_keys import Actor
from shared.clients import UNIDENTIFIED, ClientIdentity
from shared.families import Family
from shared.job import InterceptionJob
from shared.keys import RedisKeys
from shared.messages import ControlMessage
from shared.providers import OPENAI
from shared.redis import Command

logger = logging.getLogger(__name__)


class QueueFull(GatewayError):
    """More jobs wait for a worker than ``max_queue_depth``: the request is shed (HTTP 503)."""

    def __init__(self, depth: int) -> None:
        message = f"the gateway is overloaded ({depth} requests waiting); try again shortly"
        super().__init__(503, message, "server_error", "queue_full", {"Retry-After": "2"})


# One script checks every limit and, only if all pass, queues the job: a refused request leaves nothing
# behind, and an admitted one costs the same single round trip as before.
# KEYS: job, queue, pending, the actor's slots, the actor's request count, the interception's owner, its
#       circuit (shared/breaker.py)
# ARGV: job payload, job ttl ms, queue score ms, interception id, max queue depth, max concurrent per actor,
#       now ms, slot lease ms, requests per minute per actor, owner actor id ('' for none), ms the longest
#       interception lasts (the owner's ttl, and the slots set's: its members lapse one by one by score),
#       the circuit's probes (0: no breaker), its open time ms
ENQUEUE_SCRIPT = (
    """
local waiting = redis.call('LLEN', KEYS[3])
local depth = tonumber(ARGV[5])
if depth > 0 and waiting >= depth then return {'queue_full', waiting} end
local concurrent = tonumber(ARGV[6])
if concurrent > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', ARGV[7])
  if redis.call('ZCARD', KEYS[4]) >= concurrent then return {'concurrency', concurrent} end
end
local per_minute = tonumber(ARGV[9])
if per_minute > 0 then
  if tonumber(redis.call('GET', KEYS[5]) or '0') >= per_minute then
    return {'rate', redis.call('PTTL', KEYS[5])}
  end
  if redis.call('INCR', KEYS[5]) == 1 or redis.call('PTTL', KEYS[5]) < 0 then
    redis.call('PEXPIRE', KEYS[5], 60000)
  end
end
"""
    + ADMIT_FRAGMENT
    + """
if concurrent > 0 then
  redis.call('ZADD', KEYS[4], tonumber(ARGV[7]) + tonumber(ARGV[8]), ARGV[4])
  redis.call('PEXPIRE', KEYS[4], ARGV[11])
end
if ARGV[10] ~= '' then redis.call('SET', KEYS[6], ARGV[10], 'PX', ARGV[11]) end
redis.call('PSETEX', KEYS[1], ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
redis.call('RPUSH', KEYS[3], ARGV[4])
return {'ok', waiting}
"""
)


class CircuitOpen(GatewayError):
    """The provider's circuit is open (shared/breaker.py): refused before queueing (HTTP 503)."""

    def __init__(self, provider: str, retry_ms: int) -> None:
        retry_after = max(1, math.ceil(retry_ms / 1000))
        message = (
            f"the provider '{provider}' is failing (its circuit breaker is open); try again in {retry_after}s"
        )
        super().__init__(503, message, "server_error", "circuit_open", {"Retry-After": str(retry_after)})


NO_LIMITS = Limits()


def add_job(
    pipe: Pipeline, keys: RedisKeys, job: InterceptionJob, *, expires: float, limits: Limits = NO_LIMITS
) -> None:
    """Add to ``pipe`` what queues ``job`` if the ``limits`` allow it: arq's job key, its queue entry, its id
    on the pending list the workers block on, the actor's slot and request count, and the stream's owner.
    The job expires unless a worker takes it within ``expires`` seconds.

    The command's result is ``[b"ok", jobs waiting before this one]``, or the refusal: ``[b"queue_full",
    jobs waiting]``, ``[b"concurrency", limit]``, ``[b"rate", ms until the window ends]`` or
    ``[b"circuit_open", ms until a request may pass]``."""
    enqueued_ms = int(job.enqueued_at * 1000)
    try:  # the only JSON that cannot be encoded again is nested too deep, with the job's own levels
        payload = job.model_dump(mode="json")
        data = serialize_job(job.function, (payload,), {}, None, enqueued_ms, serializer=orjson.dumps)
    except (ValueError, SerializationError):
        raise InvalidRequest(
            "the request body nests JSON deeper than this gateway carries (250 levels)"
        ) from None
    job_keys = (
        job_key_prefix + job.interception_id,
        keys.queue,
        keys.pending,
        keys.actor_slots(job.actor_id),
        keys.actor_requests(job.actor_id),
        keys.owner(job.interception_id),
        keys.circuit(job.provider, job.family, str(job.body["model"])),
    )
    pipe.eval(
        ENQUEUE_SCRIPT,
        len(job_keys),
        *job_keys,
        data,
        int(expires * 1000),
        enqueued_ms,
        job.interception_id,
        limits.max_queue_depth,
        limits.max_concurrent_per_actor,
        int(time.time() * 1000),
        int(limits.slot_lease * 1000),
        limits.requests_per_minute_per_actor,
        job.actor_id or "",
        int(limits.lifetime * 1000),
        limits.circuit_probes,
        int(limits.circuit_open_time * 1000),
    )


async def enqueue_and_follow(state: ApiState, job: InterceptionJob, *, first: Sequence[Command] = ()) -> Tail:
    """Queue ``job`` and start following its stream, in one round trip to Redis (``first`` as ``enqueue``
    says); raises QueueFull or ActorLimited, having queued nothing, when a limit refuses it."""
    tail = state.streams.follow(state.keys.stream(job.interception_id))
    try:
        await enqueue(state, job, first=first, also=state.streams.wake)
    except BaseException:
        tail.close()
        raise
    return tail


async def enqueue(
    state: ApiState,
    job: InterceptionJob,
    *,
    first: Sequence[Command] = (),
    also: Callable[[Pipeline], None] | None = None,
) -> None:
    """Queue ``job`` in one round trip, the commands ``first`` before it and what ``also`` adds to the pipeline
    after; raises QueueFull or ActorLimited when a limit refuses it (``first`` is then undone by the caller)."""
    async with state.redis.pipeline(transaction=False) as pipe:
        for command in first:
            pipe.execute_command(*command)
        add_job(pipe, state.keys, job, expires=state.settings.pickup_timeout, limits=state.limits)
        if also is not None:
            also(pipe)
        results = await pipe.execute()
    verdict, value = results[len(first)]
    if verdict == b"circuit_open":
        state.metrics.circuit_rejects.labels(str(job.family), job.provider).inc()
        raise CircuitOpen(job.provider, value)
    _raise_refusal(verdict, value)


def _raise_refusal(verdict: bytes, value: int) -> None:
    if verdict == b"queue_full":
        raise QueueFull(value)
    if verdict == b"concurrency":
        raise ActorLimited(
            f"too many concurrent requests for this key: at most {value} at once; try again when one ends",
            "concurrency_limit_exceeded",
            1,
        )
    if verdict == b"rate":
        retry_after = max(1, math.ceil(value / 1000))
        raise ActorLimited(
            f"rate limit reached for requests per minute on this key; try again in {retry_after}s",
            "rate_limit_exceeded",
            retry_after,
        )


async def cancel(state: ApiState, interception_id: str, slots_key: str | None = None) -> None:
    """Stop the interception wherever it is: before a worker takes it, or while one runs it; and free its
    slot in ``slots_key`` (a worker that runs it frees it too when it ends).

    Shielded: it runs to its end even when called from a request that is itself being cancelled.
    """
    await asyncio.shield(_cancel(state, interception_id, slots_key))


async def _cancel(state: ApiState, interception_id: str, slots_key: str | None) -> None:
    ttl = int(state.settings.pickup_timeout + state.settings.heartbeat_timeout)
    message = ControlMessage(action="cancel", interception_id=interception_id).encode()
    try:
        async with state.redis.pipeline(transaction=False) as pipe:
            pipe.set(state.keys.cancelled(interception_id), b"1", ex=ttl)
            pipe.publish(state.keys.control, message)
            if slots_key is not None:
                pipe.zrem(slots_key, interception_id)
            await pipe.execute()
    except RedisError as exc:
        logger.warning("interception %s: could not cancel: %s", interception_id, exc)


def new_job(
    interception_id: str,
    body: dict[str, Any],
    user_agent: str | None,
    actor: Actor | None = None,
    encrypted_upstream_key: str | None = None,
    *,
    family: Family = Family.OPENAI_CHAT,
    provider: str = OPENAI,
    client_headers: dict[str, str] | None = None,
    identity: ClientIdentity = UNIDENTIFIED,
    background: bool = False,
) -> InterceptionJob:
    """The job of one request; a ``background`` one runs streamed upstream whatever its client asked, under
    a response id of the gateway's own."""
    trace_context: dict[str, str] = {}
    propagate.inject(trace_context)  # the worker's spans become children of the current one
    return InterceptionJob(
        trace_context=trace_context,
        interception_id=interception_id,
        family=family,
        provider=provider,
        body=body,
        streaming=background or body.get("stream") is True,
        client_headers=client_headers or {},
        user_agent=user_agent,
        client=identity.client,
        session_id=identity.session_id,
        actor_id=actor.id if actor else None,
        actor_metadata=actor.metadata if actor else {},
        encrypted_upstream_key=encrypted_upstream_key,
        enqueued_at=time.time(),
        background=background,
        response_id=response_id_of(interception_id) if background else None,
    )
