"""A standalone fake OpenAI (chat completions, Responses) and Anthropic upstream for benchmarks: a real
HTTP/1.1 server, run as its own process.

    python -m bench.fake_upstream --port 9000 --ttft 0.05 --delay 0.01 --chunks 100

``POST /v1/chat/completions`` with ``"stream": true`` answers with ``chunks`` chat.completion.chunk SSE
events, the first after ``ttft`` seconds and the others ``delay`` seconds apart (on a fixed schedule, so the
delays do not drift), then a usage chunk and ``data: [DONE]`` together with the last one. Without
``"stream": true`` it answers one chat.completion after ``ttft``. ``GET /v1/models`` lists one model;
``GET /bench/stats`` counts the streams and the tool-call answers served so far.

``POST /v1/messages`` (Anthropic Messages) with ``"stream": true`` answers on the same schedule with
``message_start``, ``content_block_start`` (a text block) and ``ping`` before the first of ``chunks``
``content_block_delta`` text deltas, then ``content_block_stop``, ``message_delta`` (stop reason, usage) and
``message_stop`` together with the last one; without it, one message after ``ttft``.

``POST /v1/responses`` (OpenAI Responses) with ``"stream": true`` answers on the same schedule with named
events, each with its ``sequence_number``: ``response.created``, ``response.in_progress``,
``response.output_item.added`` and ``response.content_part.added`` before the first of ``chunks``
``response.output_text.delta`` events, then ``response.output_text.done``, ``response.content_part.done``,
``response.output_item.done`` and ``response.completed`` (usage) together with the last one; without it,
one response after ``ttft``. (The answers are encoded in ``bench.fake_answers``.)

A request may override the timing with the bench-only body fields ``bench_ttft``, ``bench_delay`` and
``bench_chunks`` (the gateway passes unknown fields through unchanged).

Tool mode: when a streamed request offers a function whose name starts with ``bmcp_`` (a tool the gateway
injected) and its conversation has no ``role: tool`` message yet, the answer, after ``ttft``, is a call to
that tool (``{"text": "bench"}`` as arguments) in three chunks ``delay`` apart, ending with
``finish_reason: tool_calls``, a usage chunk and ``[DONE]``. The gateway runs the tool and calls again with
its result, and then gets the normal answer.

Built for tens of thousands of chunks a second from one process: a bare ``asyncio.Protocol`` on uvloop (no
HTTP framework), every answer pre-encoded in HTTP chunked framing, and one timer per millisecond slot
driving all the streams whose next write is due in it (not one timer per stream and chunk).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import orjson

from bench.fake_answers import (
    MODELS_RESPONSE,
    SSE_HEAD,
    completion_response,
    error_response,
    json_response,
    message_response,
    messages_stream_writes,
    offered_tool,
    response_response,
    responses_stream_writes,
    stream_writes,
    tool_call_writes,
)

SLOT = 0.001  # seconds: writes due in the same slot go out from one timer callback (libuv's timer resolution)
MAX_REQUEST = 1 << 22
CHAT_PATHS = ("/v1/chat/completions", "/chat/completions")
MESSAGES_PATHS = ("/v1/messages",)
RESPONSES_PATHS = ("/v1/responses", "/responses")


def _number(body: dict[str, Any], name: str, default: float) -> float:
    value = body.get(name)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else default


@dataclass
class Stream:
    """One answer being written: ``writes[next]`` is due at ``start + delays[next]``."""

    connection: UpstreamConnection
    writes: tuple[bytes, ...]
    start: float
    ttft: float
    delay: float
    next: int = 0

    def due(self) -> float:
        return self.start + self.ttft + self.next * self.delay


class Scheduler:
    """Writes every stream's next chunk when it is due: streams due in the same ``SLOT`` share one timer."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.slots: dict[int, list[Stream]] = {}
        self.streams = 0
        self.tool_calls = 0

    def add(self, stream: Stream) -> None:
        slot = math.ceil(stream.due() / SLOT)
        due = self.slots.get(slot)
        if due is None:
            self.slots[slot] = [stream]
            self.loop.call_at(slot * SLOT, self._fire, slot)
        else:
            due.append(stream)

    def _fire(self, slot: int) -> None:
        for stream in self.slots.pop(slot):
            connection = stream.connection
            if connection.transport is None:
                continue  # the client left
            connection.transport.write(stream.writes[stream.next])
            stream.next += 1
            if stream.next < len(stream.writes):
                self.add(stream)
            else:
                connection.answered()


class UpstreamConnection(asyncio.Protocol):
    """One client connection: HTTP/1.1 requests with a Content-Length body, kept alive between them."""

    def __init__(self, fake: FakeUpstream) -> None:
        self.fake = fake
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.busy = False  # an answer is being written
        self.close_after = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > MAX_REQUEST:
            self.reply(error_response(400, "request too large"), close=True)
        elif not self.busy:
            self._next_request()

    def _next_request(self) -> None:
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self.buffer[:end].decode("latin-1").split("\r\n")
        method, _, target = head[0].partition(" ")
        path = target.partition(" ")[0]
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        self.close_after = headers.get("connection", "").lower() == "close"
        if method == "GET":
            self.buffer = self.buffer[end + 4 :]
            self._get(path)
            return
        if "content-length" not in headers:
            self.reply(error_response(411, "Content-Length required"), close=True)
            return
        size = int(headers["content-length"])
        if len(self.buffer) < end + 4 + size:
            return  # the body is still coming
        body, self.buffer = self.buffer[end + 4 : end + 4 + size], self.buffer[end + 4 + size :]
        route = path.split("?")[0]
        if route in CHAT_PATHS:
            self.fake.chat(self, body)
        elif route in MESSAGES_PATHS:
            self.fake.plain(self, body, messages_stream_writes, message_response)
        elif route in RESPONSES_PATHS:
            self.fake.plain(self, body, responses_stream_writes, response_response)
        else:
            self.reply(error_response(404, f"no route {path}"))

    def _get(self, path: str) -> None:
        if path.startswith("/bench/stats"):
            stats = {"streams": self.fake.scheduler.streams, "tool_calls": self.fake.scheduler.tool_calls}
            self.reply(json_response(200, orjson.dumps(stats)))
        elif path.rstrip("/") in ("/v1/models", "/models"):
            self.reply(MODELS_RESPONSE)
        else:
            self.reply(error_response(404, f"no route {path}"))

    def reply(self, response: bytes, close: bool = False) -> None:
        if self.transport is None:
            return
        self.transport.write(response)
        self.close_after = self.close_after or close
        self.answered()

    def answered(self) -> None:
        """The answer is written: take the next request on this connection, or close it."""
        self.busy = False
        if self.close_after and self.transport is not None:
            self.transport.close()
        elif self.buffer:
            self._next_request()

    def start(self, writes: tuple[bytes, ...], ttft: float, delay: float) -> None:
        assert self.transport is not None
        self.busy = True
        self.transport.write(SSE_HEAD)
        scheduler = self.fake.scheduler
        scheduler.add(Stream(self, writes, scheduler.loop.time(), ttft, delay))


class FakeUpstream:
    def __init__(self, ttft: float, delay: float, chunks: int) -> None:
        self.ttft = ttft
        self.delay = delay
        self.chunks = chunks
        self.scheduler = Scheduler(asyncio.get_running_loop())
        for encode in (
            stream_writes,
            completion_response,
            messages_stream_writes,
            message_response,
            responses_stream_writes,
            response_response,
        ):
            encode(chunks)  # the default answers, before the first request

    def _timing(
        self, connection: UpstreamConnection, raw: bytes
    ) -> tuple[dict[str, Any], float, float, int] | None:
        """The request's body and its timing (ttft, delay, chunks), or None after answering a 400."""
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            connection.reply(error_response(400, "invalid JSON"))
            return None
        ttft = max(0.0, _number(body, "bench_ttft", self.ttft))
        delay = max(0.0, _number(body, "bench_delay", self.delay))
        chunks = max(1, min(100_000, int(_number(body, "bench_chunks", self.chunks))))
        return body, ttft, delay, chunks

    def _answer_later(self, connection: UpstreamConnection, ttft: float, response: bytes) -> None:
        connection.busy = True
        self.scheduler.loop.call_later(ttft, connection.reply, response)

    def chat(self, connection: UpstreamConnection, raw: bytes) -> None:
        request = self._timing(connection, raw)
        if request is None:
            return
        body, ttft, delay, chunks = request
        if body.get("stream") is not True:
            self._answer_later(connection, ttft, completion_response(chunks))
            return
        self.scheduler.streams += 1
        tool = offered_tool(body)
        if tool is not None:
            self.scheduler.tool_calls += 1
            connection.start(tool_call_writes(tool), ttft, delay)
        else:
            connection.start(stream_writes(chunks), ttft, delay)

    def plain(
        self,
        connection: UpstreamConnection,
        raw: bytes,
        streamed: Callable[[int], tuple[bytes, ...]],
        whole: Callable[[int], bytes],
    ) -> None:
        """An answer without a tool mode: ``streamed(chunks)``'s writes, or ``whole(chunks)`` without
        ``"stream": true``."""
        request = self._timing(connection, raw)
        if request is None:
            return
        body, ttft, delay, chunks = request
        if body.get("stream") is not True:
            self._answer_later(connection, ttft, whole(chunks))
            return
        self.scheduler.streams += 1
        connection.start(streamed(chunks), ttft, delay)


async def serve(host: str, port: int, ttft: float, delay: float, chunks: int) -> None:
    fake = FakeUpstream(ttft, delay, chunks)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: UpstreamConnection(fake), host, port, backlog=4096, reuse_address=True
    )
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(f"fake upstream listening on http://{host}:{port}/v1", flush=True)
    try:
        await stop.wait()
    finally:
        server.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fake_upstream", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--ttft", type=float, default=0.05, help="seconds before the first chunk")
    parser.add_argument("--delay", type=float, default=0.01, help="seconds between chunks")
    parser.add_argument("--chunks", type=int, default=100, help="content chunks per answer")
    args = parser.parse_args(argv)
    import uvloop

    uvloop.run(serve(args.host, args.port, args.ttft, args.delay, max(1, args.chunks)))
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
