"""Relays one job's Redis Stream to its client.

The first decisive message sets the HTTP answer: ``open`` starts an SSE stream; ``error`` or ``result`` before
it is sent as one JSON body with its status. The API parses no chunk JSON, it only frames bytes; but for
a stream's error event in the Responses family, it reads the last chunk it relayed to number that event on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from api.errors import GatewayError
from api.jobs import cancel
from api.state import ApiState
from api.stream_hub import Entry, Tail
from shared.families import Family, error_event
from shared.job import InterceptionJob
from shared.messages import MessageKind
from shared.sse import EVENT_SEPARATOR

logger = logging.getLogger(__name__)

PING = b": ping\n"  # a comment line and no blank line: see DESIGN.md, "Keep-alive framing"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def listen_for_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def sse_events(entry_id: bytes, data_lines: bytes, skip: int = 0) -> bytes:
    """The events of one stream entry (their lines, joined by ``shared.sse.EVENT_SEPARATOR``),
    each with its ``id``: the entry's id on the last, ``<entry id>/<n>`` on the n-th before it, so that a
    client can resume after any event. The first ``skip`` events are left out."""
    if EVENT_SEPARATOR not in data_lines:
        return b"id: " + entry_id + b"\n" + data_lines + b"\n\n" if not skip else b""
    events = data_lines.split(EVENT_SEPARATOR)
    last = len(events) - 1
    return b"".join(
        b"id: " + entry_id + (b"/%d" % n if n < last else b"") + b"\n" + event + b"\n\n"
        for n, event in enumerate(events)
        if n >= skip
    )


def worker_silent() -> GatewayError:
    return GatewayError(
        502, "lost contact with the worker handling this request", "server_error", "worker_timeout"
    )


async def answer(
    state: ApiState, job: InterceptionJob, tail: Tail, request: Request, received_at: float
) -> Response:
    """Wait for the job's first decisive message on ``tail`` and turn it into the client's response.
    ``received_at`` (``time.monotonic()``) is when the request arrived. Giving up on the job frees its
    concurrency slot at once (it may never have reached a worker)."""
    settings = state.settings
    interception_id = job.interception_id
    slots_key = state.keys.actor_slots(job.actor_id)
    disconnected = asyncio.create_task(listen_for_disconnect(request.receive))
    relaying = False
    started = False
    deadline = time.monotonic() + settings.pickup_timeout
    try:
        while True:
            read = asyncio.create_task(tail.read(deadline - time.monotonic()))
            await asyncio.wait({read, disconnected}, return_when=asyncio.FIRST_COMPLETED)
            if disconnected.done():
                read.cancel()
                await cancel(state, interception_id, slots_key)
                return Response(status_code=499)
            for index, (_, message) in enumerate(batch := read.result()):
                started = True
                deadline = time.monotonic() + settings.heartbeat_timeout
                if message.kind is MessageKind.OPEN:
                    relaying = True  # the tail is the SSE relay's from here
                    pending, headers = batch[index + 1 :], message.headers
                    return SSERelay(
                        state, job.family, interception_id, tail, pending, received_at, headers=headers
                    )
                if message.kind in (MessageKind.ERROR, MessageKind.RESULT):
                    state.metrics.time_to_first_chunk.observe(time.monotonic() - received_at)
                    return Response(message.data, message.status, message.headers, "application/json")
                if message.kind is MessageKind.DONE:
                    no_answer = "the worker ended the job without an answer"
                    return GatewayError(502, no_answer, "server_error", "no_answer").response(job.family)
            if time.monotonic() < deadline:
                continue
            await cancel(state, interception_id, slots_key)
            if started:
                return worker_silent().response(job.family)
            retry_after = str(max(1, int(settings.pickup_timeout / 10)))
            return GatewayError(
                503,
                "no worker took the request in time; try again shortly",
                "server_error",
                "no_worker_available",
                {"Retry-After": retry_after},
            ).response(job.family)
    finally:
        disconnected.cancel()
        if not relaying:
            tail.close()


class Supervisor(Protocol):
    """What a relay does about its job when the client leaves, and when the worker falls silent."""

    async def client_gone(self) -> None: ...

    async def worker_silent(self) -> bool:
        """True: the job is given up, the relay ends its stream with the worker-silent error; False: the relay
        reads on (what became of the job will come down its stream)."""
        ...


class AttachedJob:
    """A job that lives for its client: cancelled when the client leaves (unless it resumes within the
    resume grace) or when its worker falls silent."""

    def __init__(self, state: ApiState, interception_id: str) -> None:
        self._state = state
        self._interception_id = interception_id

    async def client_gone(self) -> None:
        state, grace = self._state, self._state.settings.resume_grace
        if grace > 0:
            key = state.keys.resumed(self._interception_id)
            resumed = await state.redis.get(key)
            await asyncio.sleep(grace)
            if await state.redis.get(key) != resumed:
                return
        await cancel(state, self._interception_id)

    async def worker_silent(self) -> bool:
        await cancel(self._state, self._interception_id)
        return True


class SSERelay(Response):
    """The client's SSE stream, fed from the job's stream until ``done``: the upstream's end marker comes as
    a chunk, and a stream that could not be completed ends with its error event, in ``family``'s framing.

    Its supervisor says what becomes of the job when the client leaves.
    """

    media_type = "text/event-stream"

    def __init__(
        self,
        state: ApiState,
        family: Family,
        interception_id: str,
        tail: Tail,
        pending: list[Entry],
        received_at: float,
        *,
        resume_within: tuple[bytes, int] = (b"", 0),
        last_chunk: bytes = b"",
        headers: dict[str, str] | None = None,
        supervisor: Supervisor | None = None,
    ) -> None:
        """``resume_within``: an entry id and how many of its first events the client already has;
        ``last_chunk``: the data of the last chunk a resuming client got before ``tail``'s entries (a Responses
        error event among them is numbered on from it);
        ``headers``: the upstream's, relayed (``shared.relayed_headers``); ``supervisor``: what becomes of
        the job when the client leaves or the worker falls silent (AttachedJob unless given)."""
        self.status_code = 200
        self.background = None
        self.init_headers({**(headers or {}), **SSE_HEADERS})  # no body, no length
        self._state = state
        self._family = family
        self._interception_id = interception_id
        self._tail = tail
        self._pending = pending
        self._resume_within = resume_within
        self._last_chunk = last_chunk
        self._supervisor = supervisor or AttachedJob(state, interception_id)
        self._received_at: float | None = received_at  # None once the first chunk is out

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        relay = asyncio.create_task(self._relay(send))
        gone = asyncio.create_task(listen_for_disconnect(receive))
        try:
            done, _ = await asyncio.wait({relay, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            relay.cancel()
            await asyncio.gather(relay, gone, return_exceptions=True)
            self._tail.close()
        if gone in done:
            await self._supervisor.client_gone()
        elif relay.exception() is not None:
            logger.error("interception %s: relay failed", self._interception_id, exc_info=relay.exception())
        else:
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    def _observe(self, entry_id: bytes, chunks: int) -> None:
        metrics = self._state.metrics
        written_ms = int(entry_id.split(b"-", 1)[0])  # a stream entry id starts with Redis's time in ms
        lag = max(0.0, time.time() - written_ms / 1000)
        for _ in range(chunks):
            metrics.relay_lag.observe(lag)
        if self._received_at is not None:
            metrics.time_to_first_chunk.observe(time.monotonic() - self._received_at)
            self._received_at = None

    async def _relay(self, send: Send) -> None:
        settings = self._state.settings
        now = time.monotonic()
        last_seen = last_sent = now
        batch = self._pending
        last_chunk = self._last_chunk  # the client's last chunk, read only to number an error event on from
        while True:
            out = bytearray()
            finished = False
            for entry_id, message in batch:
                if message.kind is MessageKind.CHUNK:
                    skip = self._resume_within[1] if entry_id == self._resume_within[0] else 0
                    out += sse_events(entry_id, message.data, skip)
                    last_chunk = message.data
                    self._observe(entry_id, message.data.count(EVENT_SEPARATOR) + 1)
                elif message.kind is MessageKind.ERROR:
                    out += sse_events(entry_id, error_event(self._family, message.data, last_chunk))
                elif message.kind is MessageKind.DONE:  # the end marker, if any, was the upstream's own chunk
                    finished = True
                    break
            now = time.monotonic()
            # the worker is silent while its stream is, not while the API paused reading it (backpressure)
            if batch:
                last_seen = now
            elif now - (last_seen := max(last_seen, self._tail.heard_at)) >= settings.heartbeat_timeout:
                if await self._supervisor.worker_silent():
                    silent = worker_silent().body(self._family)
                    out += error_event(self._family, silent, last_chunk) + b"\n\n"
                    finished = True
                else:
                    last_seen = now
            elif now - last_sent >= settings.keepalive_interval:
                out += PING
            if out:
                await send({"type": "http.response.body", "body": bytes(out), "more_body": True})
                last_sent = now
            if finished:
                return
            wait = min(last_sent + settings.keepalive_interval, last_seen + settings.heartbeat_timeout) - now
            batch = await self._tail.read(wait)
