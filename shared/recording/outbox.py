"""The outbox of usage records: a Redis Stream that workers append to and drain into the database.

A record is one stream entry, its JSON under ``FIELD``, written with the job's own stream entries (the
worker's coalesced writes): it is as durable as the stream the client reads. A started record also marks
the interception open (``RedisKeys.open_interceptions``: id -> worker id), its ended record clears the mark,
so that an interception whose worker died can be ended by another (see ``shared/recording/drain.py``).

The stream keeps the newest ``maxlen`` records: past that (a database down for long under load) the oldest
are dropped.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from pydantic import TypeAdapter

from shared.keys import RedisKeys
from shared.recording.records import InterceptionEnded, InterceptionStarted, Record
from shared.redis import Command

logger = logging.getLogger(__name__)

FIELD = b"r"
RECORD = TypeAdapter[Record](Record)


def append(keys: RedisKeys, maxlen: int, payload: bytes) -> Command:
    """The XADD of one serialized record."""
    return (b"XADD", keys.records, b"MAXLEN", maxlen, b"*", FIELD, payload)


def parse(fields: dict[bytes, bytes]) -> Record:
    """The record of an outbox entry; raises pydantic's ValidationError (or KeyError) for anything else."""
    return RECORD.validate_json(fields[FIELD])


class CommandSink(Protocol):
    """Where the outbox's commands go: the worker's coalesced writes (``worker.stream_writes``)."""

    def send(self, commands: list[Command]) -> asyncio.Future[list[Any]]: ...


class OutboxRecorder:
    """A ``Recorder`` that appends each record to the outbox, in the next batch of the worker's writes.

    ``dropped`` counts the records Redis did not take (it was unavailable); their loss is logged once per
    spell of failures.
    """

    def __init__(self, sink: CommandSink, keys: RedisKeys, worker_id: str, maxlen: int) -> None:
        self._sink = sink
        self._keys = keys
        self._worker_id = worker_id
        self._maxlen = maxlen
        self._in_flight: set[asyncio.Future[list[Any]]] = set()
        self._failing = False
        self.dropped = 0

    def record(self, record: Record) -> None:
        try:
            commands = [append(self._keys, self._maxlen, record.model_dump_json().encode())]
            if isinstance(record, InterceptionStarted):
                commands.append(
                    (b"HSET", self._keys.open_interceptions, record.interception_id, self._worker_id)
                )
            elif isinstance(record, InterceptionEnded):
                commands.append((b"HDEL", self._keys.open_interceptions, record.interception_id))
            sent = self._sink.send(commands)
        except Exception:  # recording must never break the relay (e.g. no running loop)
            logger.exception("usage recording: could not queue a record")
            self.dropped += 1
            return
        self._in_flight.add(sent)
        sent.add_done_callback(self._sent)

    async def flushed(self, timeout: float) -> None:  # noqa: ASYNC109 - a bound on waiting, not on the call
        """Waits (at most ``timeout`` seconds) until the records taken so far have reached Redis or failed."""
        if self._in_flight:
            await asyncio.wait(set(self._in_flight), timeout=timeout)

    def _sent(self, sent: asyncio.Future[list[Any]]) -> None:
        self._in_flight.discard(sent)
        failure = None if sent.cancelled() else sent.exception()
        if failure is None and not sent.cancelled():
            if self._failing:
                self._failing = False
                logger.warning("usage recording: Redis takes records again")
            return
        self.dropped += 1
        if not self._failing:
            self._failing = True
            logger.warning("usage recording: records lost, Redis did not take them: %s", failure)
