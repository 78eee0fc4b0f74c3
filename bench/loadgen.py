"""The load generator of ``bench.run``: closed-loop clients holding streamed chat completions, Anthropic
messages or OpenAI responses open, in a process of its own (``python -m bench.loadgen``, driven over a pipe: see ``bench.pipe``
and ``LoadGen``).

Built to hold a thousand streams of a hundred chunks a second each from one process: a bare
``asyncio.Protocol`` per connection on uvloop, speaking just enough HTTP/1.1. A response's head is parsed
(status, ``Transfer-Encoding``, ``Connection``); its body is not decoded: each read counts the chunks it
holds (a few bytes of the previous read kept, so that one split across two reads is counted once) and
timestamps them all at the read. A chunk is what ``Wire`` says per API family: chat completions' ``data:``
events (``[DONE]`` not counted), Anthropic's ``content_block_delta`` events, Responses'
``response.output_text.delta`` events (by the type in their data: LiteLLM sends them without ``event:``
lines). The stream is complete at the read that holds the family's end (``[DONE]``; ``message_stop``;
``response.completed``); with a chunked body the connection is kept alive for the client's next stream once
the last chunk has arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import orjson

from bench.pipe import PipedProcess, answer, commands

GAP_BUCKET = 0.00005  # seconds: inter-chunk gaps are counted in buckets this wide
LAST_CHUNK = b"0\r\n\r\n"
CONNECT_TIMEOUT = 10.0
ERROR_PAUSE = 0.05  # a client whose stream failed waits this long before its next one


@dataclass(frozen=True)
class Wire:
    """What a family's stream looks like to the client: its route's request headers, the marker of one
    chunk, the marker of the stream's end (``done_is_chunk``: the end's own event also holds the chunk
    marker) and the marker of an error event."""

    headers: str
    chunk: bytes
    done: bytes
    done_is_chunk: bool
    error: bytes

    @property
    def keep(self) -> int:
        """Bytes of the previous read kept: enough for any marker split across two reads."""
        return max(len(self.chunk), len(self.done), len(self.error)) - 1


WIRES = {
    "chat": Wire("Authorization: Bearer bench\r\n", b"data:", b"[DONE]", True, b'{"error"'),
    "anthropic": Wire(
        "x-api-key: bench\r\nanthropic-version: 2023-06-01\r\n",
        b"event: content_block_delta",
        b"event: message_stop",
        False,
        b"event: error",
    ),
    "responses": Wire(
        "Authorization: Bearer bench\r\n",
        b'"response.output_text.delta"',
        b'"response.completed"',
        False,
        b'"type":"error"',
    ),
}


@dataclass
class Stream:
    """One request and its response, as they arrive."""

    start: float
    measured: bool
    counters: Counters
    done: asyncio.Future[None]
    wire: Wire
    head: bytes = b""
    body_started: bool = False
    chunked: bool = False
    keep_alive: bool = True
    ttft: float | None = None
    completion: float | None = None
    last_event: float = 0.0
    events: int = 0
    tail: bytes = b""  # the end of the previous read
    error: str | None = None

    def feed(self, data: bytes, now: float) -> bool:
        """Takes one read; True once the response is over (then ``error`` says whether it went well)."""
        if not self.body_started:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return False
            head, data = self.head[:end].lower(), self.head[end + 4 :]
            self.body_started = True
            self.chunked = b"transfer-encoding: chunked" in head
            self.keep_alive = b"connection: close" not in head
            status = head[9:12]
            if status != b"200":
                self.error = f"HTTP {status.decode(errors='replace')}"
                self.keep_alive = False  # its body is not read: a new connection for the next stream
                return True
            if not data:
                return False
        window = self.tail + data
        self.tail = window[-self.wire.keep :]
        if self.completion is None:
            self._count(window, data, now)
        if self.completion is not None:  # after [DONE]: the end of the chunked body
            if not self.chunked:
                self.keep_alive = False
                return True
            return window.endswith(LAST_CHUNK)
        return False

    def _count(self, window: bytes, data: bytes, now: float) -> None:
        # ``window`` starts with the end of the previous read: of those bytes, only the last len(marker) - 1
        # can start a marker not already counted (one split across the reads)
        wire = self.wire
        events = window.count(wire.chunk, max(0, len(window) - len(data) - (len(wire.chunk) - 1)))
        done = wire.done in window
        if done and wire.done_is_chunk:
            events -= 1  # the [DONE] event is not a chunk
        if wire.error in window:
            self.error = "error event"
        if events > 0:
            counters = self.counters
            counters.events += events
            if self.ttft is None:
                self.ttft = now - self.start
            elif self.measured:
                gaps = counters.gaps
                bucket = int((now - self.last_event) / GAP_BUCKET)
                gaps[bucket] = gaps.get(bucket, 0) + 1
            if self.measured and events > 1:
                counters.gaps[0] = counters.gaps.get(0, 0) + events - 1  # arrived in the same read
            self.events += events
            self.last_event = now
        if done:
            self.completion = now - self.start
            self.counters.completed += 1


@dataclass
class Counters:
    """Chunks and completed streams over all the clients, and the gaps between chunks of measured streams
    (bucket index -> count)."""

    events: int = 0
    completed: int = 0
    gaps: dict[int, int] = field(default_factory=dict)


class Connection(asyncio.Protocol):
    """One client connection, one stream at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.stream: Stream | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        stream = self.stream
        if stream is not None and not stream.done.done():
            if stream.completion is None and stream.error is None:
                stream.error = "connection closed"
            stream.done.set_result(None)

    def data_received(self, data: bytes) -> None:
        stream = self.stream
        if stream is None or stream.done.done():
            return
        if stream.feed(data, time.monotonic()):
            stream.done.set_result(None)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None

    async def exchange(self, request: bytes, stream: Stream, limit: float) -> None:
        """Sends the request and waits for its response to end (at most ``limit`` seconds: then the connection is
        closed)."""
        assert self.transport is not None
        self.stream = stream
        self.transport.write(request)
        try:
            await asyncio.wait_for(stream.done, limit)
        except TimeoutError:
            stream.error = "timeout"
            self.close()
        finally:
            self.stream = None
        if not stream.keep_alive or stream.error is not None:
            self.close()


def http_request(host: str, port: int, path: str, body: dict[str, Any], wire: Wire) -> bytes:
    payload = orjson.dumps(body)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n{wire.headers}"
        f"Accept: text/event-stream\r\nContent-Length: {len(payload)}\r\n\r\n"
    )
    return head.encode() + payload


@dataclass(frozen=True)
class Phase:
    """One shard's part of a phase (times on ``time.monotonic``'s clock, which on Linux is the same in every
    process): its clients start their first streams at ``t0 + offsets[i]``; the streams started in
    ``[t0 + warmup, t0 + warmup + seconds)`` are measured, and the chunks and completions in that window
    counted. After the window the clients go on (their streams not measured) until every measured stream has
    ended, so that those end under the same load, then stop."""

    host: str
    port: int
    path: str
    family: str  # a key of WIRES
    body: dict[str, Any]
    min_events: int  # fewer chunks than this in a stream is an error
    offsets: list[float]
    t0: float
    warmup: float
    seconds: float
    timeout: float  # one stream at most


async def run_phase(phase: Phase) -> dict[str, Any]:
    """``{"streams": [[start - t0, ttft, completion, chunks, error, measured], ...] (every stream of the
    phase, warm-up and the clients' last ones included), "gaps": {bucket: count} (measured streams),
    "window": {"chunks", "completed"}}``."""
    loop = asyncio.get_running_loop()
    wire = WIRES[phase.family]
    request = http_request(phase.host, phase.port, phase.path, phase.body, wire)
    counters = Counters()
    measuring_from = phase.t0 + phase.warmup
    measuring_until = measuring_from + phase.seconds
    marks: list[tuple[int, int]] = []  # (chunks, completed streams) at the window's start and end
    in_flight = 0  # measured streams that have not ended
    results: list[list[Any]] = []

    def mark() -> None:
        marks.append((counters.events, counters.completed))

    loop.call_later(max(0.0, measuring_from - time.monotonic()), mark)
    loop.call_later(max(0.0, measuring_until - time.monotonic()), mark)

    async def client(offset: float) -> None:
        nonlocal in_flight
        await asyncio.sleep(max(0.0, phase.t0 + offset - time.monotonic()))
        connection: Connection | None = None
        try:
            while time.monotonic() < measuring_until or in_flight:
                start = time.monotonic()
                measured = measuring_from <= start < measuring_until
                stream = Stream(start, measured, counters, loop.create_future(), wire)
                in_flight += measured
                try:
                    if connection is None or connection.transport is None:
                        connection = await open_connection(phase.host, phase.port)
                    await connection.exchange(request, stream, phase.timeout)
                except OSError as exc:
                    stream.error = f"connect: {type(exc).__name__}"
                    connection = None
                finally:
                    in_flight -= measured
                if stream.error is None and stream.events < phase.min_events:
                    stream.error = f"{stream.events} chunks, expected at least {phase.min_events}"
                figures = [
                    start - phase.t0,
                    stream.ttft,
                    stream.completion,
                    stream.events,
                    stream.error,
                    measured,
                ]
                results.append(figures)
                if stream.error is not None:
                    await asyncio.sleep(ERROR_PAUSE)  # no tight loop of failing requests
        finally:
            if connection is not None:
                connection.close()

    await asyncio.gather(*(client(offset) for offset in phase.offsets))
    if len(marks) < 2:
        raise RuntimeError("the phase ended before its measuring window did")
    (chunks_before, completed_before), (chunks_after, completed_after) = marks
    window = {"chunks": chunks_after - chunks_before, "completed": completed_after - completed_before}
    results.sort(key=lambda result: result[0])
    return {"streams": results, "gaps": counters.gaps, "window": window}


async def open_connection(host: str, port: int) -> Connection:
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(CONNECT_TIMEOUT):
        _, connection = await loop.create_connection(Connection, host, port)
    return connection


async def serve() -> None:
    """Runs each phase it is sent (``Phase`` fields as JSON) and answers with its figures."""
    async for command in commands():
        answer(await run_phase(Phase(**command)))


class LoadGen:
    """The parent's handle on the load-generator processes: a phase's clients are dealt out over them in
    turn (client ``i`` to shard ``i % shards``), so that each shard's starts are spread as evenly as all."""

    def __init__(self, shards: list[PipedProcess]) -> None:
        self.shards = shards

    @classmethod
    async def start(cls, count: int, logdir: Path) -> LoadGen:
        shards: list[PipedProcess] = []
        try:
            for index in range(count):
                name, log_path = f"load generator {index + 1}", logdir / f"loadgen-{index + 1}.log"
                shards.append(await PipedProcess.start(name, ["-m", "bench.loadgen"], log_path))
        except BaseException:
            await cls(shards).stop()
            raise
        return cls(shards)

    @property
    def pids(self) -> list[int]:
        return [shard.pid for shard in self.shards]

    def shards_for(self, clients: int, per_shard: int) -> list[PipedProcess]:
        return self.shards[: max(1, min(len(self.shards), math.ceil(clients / per_shard)))]

    async def send(self, phase: Phase, shards: list[PipedProcess]) -> None:
        for index, shard in enumerate(shards):
            part = {**phase.__dict__, "offsets": phase.offsets[index :: len(shards)]}
            await shard.send(part)

    async def receive(self, shards: list[PipedProcess], within: float) -> dict[str, Any]:
        """The shards' answers, merged."""
        merged: dict[str, Any] = {"streams": [], "gaps": {}, "window": {"chunks": 0, "completed": 0}}
        for shard in shards:
            part = await shard.receive(within)
            merged["streams"] += part["streams"]
            for bucket, count in part["gaps"].items():
                merged["gaps"][int(bucket)] = merged["gaps"].get(int(bucket), 0) + count
            for name, value in part["window"].items():
                merged["window"][name] += value
        merged["streams"].sort(key=lambda result: result[0])
        return merged

    async def stop(self) -> None:
        for shard in self.shards:
            with contextlib.suppress(Exception):
                await shard.stop()


def main() -> int:
    import uvloop

    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
