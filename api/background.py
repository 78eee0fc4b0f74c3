"""Background responses (Responses ``background: true``), served by the gateway itself.

The job runs on a worker whatever its client does: a client that leaves never cancels it, and any API instance
answers for it from its record (shared/background.py) and its stream, which hold everything: its status now,
its events from any sequence number on, its cancellation. A job that nothing answers for any more (its worker
died, or no worker took it in time) is ended as failed by the first API instance that sees it so, in its
stream, where every reader finds it."""

from __future__ import annotations

import time
from typing import Any

from fastapi.responses import JSONResponse, Response

from api.background_status import Entry, Limits, Liveness, Seen, current, last_chunk, resume_after
from api.errors import GatewayError
from api.jobs import cancel, enqueue, enqueue_and_follow
from api.relay import SSERelay
from api.state import ApiState
from shared.background import CANCELLED_FIELD, RECORD_FIELD, BackgroundRecord, queued_response
from shared.client_keys import Actor
from shared.families import Family, error_body
from shared.job import InterceptionJob
from shared.messages import MessageKind, StreamMessage

FIRST_ENTRIES = 8  # the response's first event is among them
LAST_ENTRIES = 8  # its last word too, with the heartbeat and the end after it
RESUME_PAGE = 256
CANCEL_WAIT = 5.0  # seconds a cancel waits for the worker to end the job

# Ends a job nothing answers for: its error, then its end, unless it ended or spoke meanwhile.
# KEYS: stream, record; ARGV: entries newer than this (ms) are a live worker's, retention ms, '1' if a stream
# that does not exist is dead too (no worker took the job in time), then the error entry's fields
END_DEAD_SCRIPT = """
local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #newest == 0 then
  if ARGV[3] ~= '1' then return 0 end
else
  if newest[1][2][2] == 'done' then return 0 end
  if tonumber(string.match(newest[1][1], '^(%d+)')) >= tonumber(ARGV[1]) then return 0 end
end
redis.call('XADD', KEYS[1], '*', unpack(ARGV, 4, #ARGV))
redis.call('XADD', KEYS[1], '*', 'k', 'done')
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1
"""


def not_found(response_id: str) -> GatewayError:
    return GatewayError(404, f"no response with id '{response_id}'", "invalid_request_error", "not_found")


async def start_background(state: ApiState, job: InterceptionJob, received_at: float) -> Response:
    """Queue a background response and answer at once: its object in status ``queued``, or (streamed) its
    stream, which its job writes whether or not this client stays."""
    if job.response_id is None:
        raise ValueError("a background job has a response id")
    settings, key = state.settings, state.keys.background(job.interception_id)
    record = BackgroundRecord(
        actor_id=job.actor_id,
        created_at=job.enqueued_at,
        response=queued_response(job.response_id, job.body, job.enqueued_at),
    )
    lifetime = settings.pickup_timeout + settings.background_job_timeout + settings.background_retention
    first = ((b"HSET", key, RECORD_FIELD, record.encode()), (b"PEXPIRE", key, int(lifetime * 1000)))
    streamed = job.body.get("stream") is True
    try:
        if not streamed:
            await enqueue(state, job, first=first)
            return JSONResponse(record.response)
        tail = await enqueue_and_follow(state, job, first=first)
    except GatewayError:  # refused: the record goes too
        await state.redis.delete(key)
        raise
    return SSERelay(
        state,
        job.family,
        job.interception_id,
        tail,
        [],
        received_at,
        supervisor=BackgroundJob(state, job.interception_id),
    )


class BackgroundJob:
    """The supervisor of a background response's relays (api.relay.Supervisor): its client leaving changes
    nothing; its worker's silence is judged from its stream, and a dead job ended there."""

    def __init__(self, state: ApiState, interception_id: str) -> None:
        self._state = state
        self._interception_id = interception_id

    async def client_gone(self) -> None:
        return None

    async def worker_silent(self) -> bool:
        seen = await read(self._state, self._interception_id)
        if seen is not None:
            await settle(self._state, self._interception_id, seen)
        return False


async def read(state: ApiState, interception_id: str, actor: Actor | None = None) -> Seen | None:
    """What Redis holds of a background response, None if nothing (or it is another actor's, with ``actor``)."""
    stream = state.keys.stream(interception_id)
    async with state.redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(state.keys.background(interception_id))
        pipe.xrange(stream, "-", "+", count=FIRST_ENTRIES)
        pipe.xrevrange(stream, "+", "-", count=LAST_ENTRIES)
        pipe.time()
        fields, first, last, (seconds, micros) = await pipe.execute()
    if RECORD_FIELD not in fields:
        return None
    record = BackgroundRecord.decode(fields[RECORD_FIELD])
    if actor is not None and record.actor_id != actor.id:
        return None
    return Seen(
        record=record,
        cancelled=CANCELLED_FIELD in fields,
        first=_entries(first),
        last=_entries(last),
        now_ms=seconds * 1000 + micros // 1000,
    )


async def read_own(state: ApiState, interception_id: str, response_id: str, actor: Actor | None) -> Seen:
    """What Redis holds of the caller's background response ``response_id``; 404 for anyone else's, or none."""
    seen = await read(state, interception_id, actor)
    if seen is None:
        raise not_found(response_id)
    return seen


def _entries(raw: list[tuple[bytes, dict[bytes, bytes]]]) -> list[Entry]:
    return [(entry_id, StreamMessage.from_mapping(fields)) for entry_id, fields in raw]


def limits(state: ApiState) -> Limits:
    settings = state.settings
    return Limits(int(settings.pickup_timeout * 1000), int(settings.heartbeat_timeout * 1000))


async def settle(state: ApiState, interception_id: str, seen: Seen) -> tuple[dict[str, Any], Liveness]:
    """The response's object now; a dead job is ended as failed first (in its stream, for every reader)."""
    response, liveness = current(seen, limits(state))
    if liveness is not Liveness.DEAD:
        return response, liveness
    if seen.last:
        message, code = "the worker running this response stopped answering", "worker_lost"
    else:
        message, code = "no worker took this response in time", "no_worker_available"
    body = error_body(Family.OPENAI_RESPONSES, 500, message, "server_error", code)
    error = StreamMessage(kind=MessageKind.ERROR, status=500, data=body)
    await state.redis.eval(
        END_DEAD_SCRIPT,
        2,
        state.keys.stream(interception_id),
        state.keys.background(interception_id),
        seen.now_ms - limits(state).silence_ms,
        int(state.settings.background_retention * 1000),
        "1" if not seen.last else "0",
        *error.to_fields(),
    )
    again = await read(state, interception_id)
    return current(again, limits(state)) if again is not None else (response, liveness)


async def retrieve(
    state: ApiState, interception_id: str, response_id: str, actor: Actor | None
) -> dict[str, Any]:
    seen = await read_own(state, interception_id, response_id, actor)
    response, _ = await settle(state, interception_id, seen)
    return response


async def cancel_background(
    state: ApiState, interception_id: str, response_id: str, actor: Actor | None
) -> dict[str, Any]:
    """Stop the response's job and answer its final object (status ``cancelled``, unless it ended first);
    idempotent: a cancel of an ended response answers its final object."""
    seen = await read_own(state, interception_id, response_id, actor)
    response, liveness = await settle(state, interception_id, seen)
    if liveness is Liveness.ENDED:
        return response
    await state.redis.hset(state.keys.background(interception_id), CANCELLED_FIELD, b"1")
    after = seen.last[0][0] if seen.last else b"0-0"
    tail = state.streams.follow(state.keys.stream(interception_id), after=after)
    try:
        await cancel(state, interception_id)  # its publish wakes the hub's read too
        deadline = time.monotonic() + CANCEL_WAIT
        while (remaining := deadline - time.monotonic()) > 0 and seen.last:
            if any(message.kind is MessageKind.DONE for _, message in await tail.read(remaining)):
                break
    finally:
        tail.close()
    seen = await read(state, interception_id) or seen
    return current(seen, limits(state))[0]


async def stream_background(
    state: ApiState,
    interception_id: str,
    response_id: str,
    actor: Actor | None,
    starting_after: int | None,
) -> Response:
    """The response's events after sequence number ``starting_after`` (all without it), then the live tail."""
    received_at = time.monotonic()
    await read_own(state, interception_id, response_id, actor)
    key = state.keys.stream(interception_id)
    after, within, got = b"0-0", (b"", 0), b""
    cursor = "-"
    while page := await state.redis.xrange(key, cursor, "+", count=RESUME_PAGE):
        entries = _entries(page)
        found = resume_after(entries, -1 if starting_after is None else starting_after)
        after, within = found or (entries[-1][0], (b"", 0))
        got = last_chunk(entries, after) or got
        if found is not None:
            break
        cursor = "(" + after.decode()
    tail = state.streams.follow(key, after=after)
    try:
        async with state.redis.pipeline(transaction=False) as pipe:
            state.streams.wake(pipe)
            await pipe.execute()
    except BaseException:
        tail.close()
        raise
    supervisor = BackgroundJob(state, interception_id)
    return SSERelay(
        state,
        Family.OPENAI_RESPONSES,
        interception_id,
        tail,
        [],
        received_at,
        resume_within=within,
        last_chunk=got,
        supervisor=supervisor,
    )


async def delete_background(
    state: ApiState, interception_id: str, response_id: str, actor: Actor | None
) -> dict[str, Any]:
    """Forget the response (its job stopped first if it runs): its record and its events."""
    seen = await read_own(state, interception_id, response_id, actor)
    if current(seen, limits(state))[1] is Liveness.RUNNING:
        await cancel(state, interception_id)
    keys = state.keys
    await state.redis.delete(keys.background(interception_id), keys.stream(interception_id))
    return {"id": response_id, "object": "response", "deleted": True}
