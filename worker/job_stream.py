"""The writing end of one job's Redis Stream."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from shared.messages import MessageKind, StreamMessage
from shared.redis import Command
from shared.relayed_headers import relayed_headers
from shared.sse import EVENT_SEPARATOR
from shared.upstream import GatewayFailure
from worker.stream_writes import CoalescingWriter, SentWrite

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SlotLease:
    """The interception's concurrency slot (a member of its actor's slot set, scored by when it lapses) and
    the records kept beside its stream (its owner, a background response's record): heartbeats renew the
    slot, the stream's end releases it and cuts those records to the stream's retention."""

    slots_key: str
    member: str
    lease: float
    kept_keys: tuple[str, ...]
    retention: float

    def renew(self) -> tuple[Command, ...]:
        lapses_ms = int((time.time() + self.lease) * 1000)
        return ((b"ZADD", self.slots_key, b"XX", lapses_ms, self.member),)

    def release(self) -> tuple[Command, ...]:
        retention_ms = int(self.retention * 1000)
        return (
            (b"ZREM", self.slots_key, self.member),
            *((b"PEXPIRE", key, retention_ms) for key in self.kept_keys),
        )


@dataclass(frozen=True)
class ResponseAliases:
    """Where a response id the client was shown is mapped to the upstream response it stands for
    (``RedisKeys.response_alias``), and for how long."""

    key: Callable[[str], str]
    retention: float

    def commands(self, aliases: Mapping[str, str]) -> tuple[Command, ...]:
        retention_ms = int(self.retention * 1000)
        return tuple(
            (b"SET", self.key(shown), upstream, b"PX", retention_ms) for shown, upstream in aliases.items()
        )


ENTRY_MAX_BYTES = 64 * 1024


def entry_groups(payloads: list[bytes], max_bytes: int) -> list[list[bytes]]:
    """``payloads`` in order, cut into groups of at most ``max_bytes`` (a larger payload alone in its group)."""
    if sum(map(len, payloads)) <= max_bytes:
        return [payloads]
    groups: list[list[bytes]] = [[]]
    size = 0
    for payload in payloads:
        if groups[-1] and size + len(payload) > max_bytes:
            groups.append([])
            size = 0
        groups[-1].append(payload)
        size += len(payload)
    return groups


class StreamTooLarge(GatewayFailure):
    """The answer outgrew the bytes a stream may hold: the job stops and the client is told so, like an
    upstream failure (an error event once the stream has started, else a 502)."""

    def __init__(self, max_bytes: int) -> None:
        message = (
            f"the answer is larger than this gateway keeps for one stream ({max_bytes} bytes, "
            "AIBRIDGE_STREAM_MAX_BYTES); it was stopped there"
        )
        super().__init__(502, message, "stream_too_large", "server_error")


class JobStream:
    """Appends StreamMessages to the stream of one interception.

    The stream is never trimmed, so a resume finds every event it asks for: it gets an expiry on its first
    write (covering a worker that dies mid-job) and a shorter one, the retention, once ``done`` is written.
    Its size is bounded by ``max_bytes`` of chunk and result data: the write that would pass it raises
    StreamTooLarge instead.
    """

    def __init__(
        self,
        writer: CoalescingWriter,
        key: str,
        *,
        max_bytes: int,
        retention: float,
        lifetime: float,
        lease: SlotLease,
        aliases: ResponseAliases,
    ) -> None:
        self._writer = writer
        self._lease = lease
        self._aliases = aliases
        self._remembered: list[tuple[Command, Callable[[Any], None] | None]] = []  # sent with the next write
        self._key = key.encode()
        self._xadd_creating = (b"XADD", self._key, b"*")
        self._xadd = (b"XADD", self._key, b"NOMKSTREAM", b"*")
        self._max_bytes = max_bytes
        self._data_bytes = 0
        self._retention_ms = int(retention * 1000)
        self._lifetime_ms = int(lifetime * 1000)
        self._created = False
        self._ended = False
        self._headers: dict[str, str] = {}
        self._in_flight: SentWrite | None = None  # the last chunk write, its replies not yet checked
        self.opened = False

    def _take_room(self, data: bytes) -> None:
        if self._data_bytes + len(data) > self._max_bytes:
            raise StreamTooLarge(self._max_bytes)
        self._data_bytes += len(data)

    def _send(
        self,
        *entries: Sequence[bytes],
        expire_ms: int | None = None,
        also: tuple[Command, ...] = (),
        creates: bool = False,
    ) -> SentWrite:
        """Hand ``entries`` (each a message's fields) and then ``also`` to the writer, without waiting. Past
        the first write the stream must still exist (StreamLost if not), unless the write ``creates`` it again
        (the error and end that report the loss)."""
        creates = creates or not self._created
        xadd = self._xadd_creating if creates else self._xadd
        commands: list[Command] = [(*xadd, *fields) for fields in entries]
        if expire_ms is None and not self._created:
            expire_ms = self._lifetime_ms
        if expire_ms is not None:
            commands.append((b"PEXPIRE", self._key, expire_ms))
        remembered, self._remembered = self._remembered, []  # first: set before the events that show them
        replies = self._writer.send([*(command for command, _ in remembered), *commands, *also])
        self._created = True
        return SentWrite(replies, remembered, len(commands), len(entries) if not creates else 0, self._key)

    async def _write(
        self,
        *entries: Sequence[bytes],
        expire_ms: int | None = None,
        also: tuple[Command, ...] = (),
        creates: bool = False,
    ) -> list[Any]:
        """``_send``, once the chunks in flight are written; the replies of ``also``."""
        await self._settle()
        return await self._send(*entries, expire_ms=expire_ms, also=also, creates=creates).results()

    async def _settle(self) -> None:
        """Wait for the chunk write in flight, if any, raising what it raised."""
        if self._in_flight is not None:
            sent, self._in_flight = self._in_flight, None
            await sent.results()

    async def begin(self, cancelled_key: str, alias_of: str | None = None) -> tuple[bool, str | None]:
        """Write the first heartbeat (the API's sign that a worker took the job). Returns whether the client
        cancelled the job before that, and the upstream response the response id ``alias_of`` stands for
        (None: no alias, it is the upstream's own)."""
        reads: tuple[Command, ...] = ((b"EXISTS", cancelled_key),)
        if alias_of is not None:
            reads += ((b"GET", self._aliases.key(alias_of)),)
        cancelled, *rest = await self._send(
            StreamMessage(kind=MessageKind.HEARTBEAT).to_fields(), also=(*reads, *self._lease.renew())
        ).results()
        alias = rest[0] if alias_of is not None else None
        return bool(cancelled), alias.decode() if isinstance(alias, bytes) else None

    def remember(self, aliases: Mapping[str, str]) -> None:
        """Map response ids the client was shown to the upstream's, with the next write: before the client
        can read the events that show them, it can continue from them."""
        if aliases:  # none in most families: checked for every upstream read
            self._remembered += ((command, None) for command in self._aliases.commands(aliases))

    def send_later(self, command: Command, take_reply: Callable[[Any], None] | None = None) -> None:
        """Run ``command`` with the next write (no round trip of its own); ``take_reply`` gets its reply."""
        self._remembered.append((command, take_reply))

    async def heartbeat(self) -> None:
        if self._ended:  # done is the stream's last entry: a resume after it knows the stream is over
            return
        heartbeat = StreamMessage(kind=MessageKind.HEARTBEAT).to_fields()
        await self._send(heartbeat, also=self._lease.renew()).results()  # beside the job: it settles nothing

    def upstream_answered(self, headers: Iterable[tuple[str, str]]) -> None:
        """Take the relayed ones of an upstream answer's headers, until the stream opens: the client's HTTP
        answer carries those of the last answer before it (a stream's open: its first round's)."""
        if not self.opened:
            self._headers = relayed_headers(headers)

    def _open(self) -> list[bytes]:
        self.opened = True
        return StreamMessage(kind=MessageKind.OPEN, headers=self._headers).to_fields()

    async def open(self) -> None:
        """Tell the API to start the client's SSE stream (headers, then pings while nothing else flows)."""
        if not self.opened:
            await self._write(self._open())

    async def chunks(self, events: list[bytes]) -> None:
        """Relay rewritten upstream events (each its lines, without the blank line that ends it): in one
        entry, or in entries of at most about ENTRY_MAX_BYTES when one upstream read brought more (an API
        reads an entry whole)."""
        entries = []
        for group in entry_groups(events, ENTRY_MAX_BYTES):
            data = EVENT_SEPARATOR.join(group)
            self._take_room(data)
            entries.append(StreamMessage.chunk_fields(data))  # no message object per chunk
        if not self.opened:
            entries.insert(0, self._open())
        await self._settle()  # one write in flight per job: Redis's pace holds the job back
        self._in_flight = self._send(*entries)

    async def error(self, status: int, body: bytes) -> None:
        """An OpenAI-shaped error: the HTTP answer before the stream opened, an SSE error event after."""
        headers = {} if self.opened else self._headers  # an SSE error event has none
        await self._write(
            StreamMessage(kind=MessageKind.ERROR, status=status, data=body, headers=headers).to_fields(),
            creates=True,
        )

    async def result(self, status: int, body: bytes) -> None:
        self._take_room(body)
        await self._write(
            StreamMessage(
                kind=MessageKind.RESULT, status=status, data=body, headers=self._headers
            ).to_fields()
        )

    async def done(self) -> None:
        self._ended = True
        await self._write(
            StreamMessage(kind=MessageKind.DONE).to_fields(),
            expire_ms=self._retention_ms,
            also=self._lease.release(),
            creates=True,
        )

    async def expire(self) -> None:
        """Shorten the stream's life to the retention without ending it (the client has gone)."""
        await self._writer.write([(b"PEXPIRE", self._key, self._retention_ms), *self._lease.release()])

    @contextlib.asynccontextmanager
    async def heartbeats(self, interval: float) -> AsyncIterator[None]:
        """Write a heartbeat every ``interval`` seconds while the block runs."""

        async def beat() -> None:
            while True:
                await asyncio.sleep(interval)
                try:
                    await self.heartbeat()
                except RedisError as exc:
                    logger.warning("heartbeat to %s failed: %s", self._key.decode(), exc)

        task = asyncio.create_task(beat())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
