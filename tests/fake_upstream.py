"""A fake OpenAI (and Anthropic) upstream: a real aiohttp server on loopback, run in a background thread.

Each test registers a scenario under a unique model name; requests naming that model get the scenario's
replies in order. Every request is recorded, and so is the moment the gateway closed each connection.
"""

from __future__ import annotations

import asyncio
import fcntl
import socket
import struct
import termios
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from aiohttp import web


@dataclass
class SSEReply:
    """Streams ``events`` (raw SSE data payloads) with a delay before the first and between the others."""

    events: list[bytes]
    first_delay: float = 0.0
    delay: float = 0.0
    pause_after: int | None = None  # after this many events, pause for ``pause`` seconds
    pause: float = 0.0
    drop_after: int | None = None  # after this many events, close the connection without ending the stream
    done: bool = True
    pace: float = 0.0  # seconds between events kept by sleeping the server's thread (asyncio's timers take
    # 1 ms at least): each event leaves in a write of its own, so a reader that keeps up gets one per read
    headers: dict[str, str] = field(default_factory=dict)  # sent besides Content-Type


@dataclass
class RawReply:
    """An exact HTTP answer: status, headers and body bytes, after ``delay`` seconds."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})
    delay: float = 0.0


@dataclass
class StreamOrNot:
    """``streamed`` to a request with ``"stream": true``, else ``blocking``."""

    streamed: SSEReply
    blocking: RawReply


@dataclass
class CutReply:
    """A 200 whose body stops short: ``body`` framed as ``framing`` (``chunked``; ``length``: a Content-Length
    the body never reaches; ``close``: delimited by the connection's end), then, once ``release`` is set (at
    once if None), ``ending``: ``fin`` closes the connection, ``rst`` resets it, ``end`` completes the
    framing (the last chunk, or a Content-Length the body meets) and closes. Every byte is sent and
    acknowledged before the connection ends, so the gateway has all of it."""

    body: bytes
    framing: Literal["chunked", "length", "close"] = "chunked"
    ending: Literal["fin", "rst", "end"] = "fin"
    content_type: str = "text/event-stream"
    release: threading.Event | None = None


@dataclass
class ByKey:
    """The reply for the upstream key a request carries (``Authorization: Bearer`` or ``x-api-key``), else
    ``default``."""

    replies: dict[str, Reply]
    default: Reply


def upstream_key(headers: dict[str, str]) -> str | None:
    """The upstream key of a request's headers."""
    lowered = {name.lower(): value for name, value in headers.items()}
    bearer = lowered.get("authorization", "").removeprefix("Bearer ")
    return lowered.get("x-api-key") or bearer or None


def sse_body(events: list[bytes]) -> bytes:
    """SSE events carrying ``events`` as their data, as an upstream sends them."""
    return b"".join(b"data: " + event + b"\n\n" for event in events)


Reply = SSEReply | RawReply | StreamOrNot | CutReply | ByKey


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: dict[str, Any] | None
    connection_closed_at: float | None = None
    raw: bytearray = field(default_factory=bytearray)  # the body as read so far, where it is read in parts


@dataclass
class Scenario:
    replies: list[Reply]
    received: list[Received] = field(default_factory=list)


class FakeUpstream:
    def __init__(self) -> None:
        self._scenarios: dict[str, Scenario] = {}
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self.port = 0
        self.models_reply: RawReply = RawReply(200, b'{"object":"list","data":[]}')
        self.models_requests: list[Received] = []
        self.passthrough_replies: dict[str, Reply] = {}  # by path, for the passthrough paths but /v1/models
        self.passthrough_requests: list[Received] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> FakeUpstream:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake upstream did not start")
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def scenario(self, *replies: Reply) -> tuple[str, Scenario]:
        """Register replies; returns the model name that selects them, and the scenario record."""
        model = f"fake-{uuid.uuid4().hex[:10]}"
        scenario = Scenario(list(replies))
        with self._lock:
            self._scenarios[model] = scenario
        return model, scenario

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/messages", self._chat)  # Anthropic Messages: the same scenarios, by model
        app.router.add_post("/v1/responses", self._chat)  # OpenAI Responses: the same
        app.router.add_post("/chat/completions", self._chat)  # GitHub Copilot's paths, without /v1
        app.router.add_post("/responses", self._chat)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/models", self._models)
        app.router.add_get("/v1/models/{model_id:.*}", self._passthrough)
        app.router.add_post("/v1/messages/count_tokens", self._passthrough)
        app.router.add_route("*", "/v1/responses/{rest:.*}", self._passthrough)
        app.router.add_route("*", "/v1/conversations{rest:.*}", self._passthrough)
        runner = web.AppRunner(app, handle_signals=False)
        self._loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())

    async def _models(self, request: web.Request) -> web.StreamResponse:
        self.models_requests.append(Received(request.path, dict(request.headers), None))
        return await self._raw(request, self.models_reply)

    async def _passthrough(self, request: web.Request) -> web.StreamResponse:
        """The reply registered for the path, after reading the body as it comes (``received.raw`` grows
        with each part, so a test can tell the body was streamed); 404 text/plain for a path with none."""
        received = Received(request.path_qs, dict(request.headers), None)
        self.passthrough_requests.append(received)
        async for part in request.content.iter_any():
            received.raw += part
        reply = self.passthrough_replies.get(
            request.path, RawReply(404, b"Not Found", {"Content-Type": "text/plain"})
        )
        if isinstance(reply, CutReply):
            return await self._cut(request, reply)
        if isinstance(reply, SSEReply):
            return await self._sse(request, reply, received)
        return await self._raw(request, reply)  # type: ignore[arg-type]

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        with self._lock:
            scenario = self._scenarios.get(body.get("model"))
        if scenario is None:
            return web.json_response(
                {"error": {"message": "unknown model", "type": "invalid_request_error"}}, status=404
            )
        received = Received(request.path, dict(request.headers), body)
        scenario.received.append(received)
        index = len(scenario.received) - 1
        reply = scenario.replies[min(index, len(scenario.replies) - 1)]
        if isinstance(reply, ByKey):
            reply = reply.replies.get(upstream_key(received.headers) or "", reply.default)
        if isinstance(reply, StreamOrNot):
            reply = reply.streamed if body.get("stream") is True else reply.blocking
        if isinstance(reply, RawReply):
            return await self._raw(request, reply)
        if isinstance(reply, CutReply):
            return await self._cut(request, reply)
        return await self._sse(request, reply, received)

    async def _raw(self, request: web.Request, reply: RawReply) -> web.StreamResponse:
        await asyncio.sleep(reply.delay)
        return web.Response(status=reply.status, body=reply.body, headers=reply.headers)

    async def _cut(self, request: web.Request, reply: CutReply) -> web.StreamResponse:
        """Write the reply's bytes on the connection itself (aiohttp's server frames no body it did not
        complete), then end the connection as the reply says."""
        transport = request.transport
        if transport is None:
            raise ConnectionError("the gateway left before the reply")
        head = [b"HTTP/1.1 200 OK", b"Content-Type: " + reply.content_type.encode(), b"Connection: close"]
        body = reply.body
        if reply.framing == "chunked":
            head.append(b"Transfer-Encoding: chunked")
            body = b"%x\r\n%s\r\n" % (len(body), body) if body else b""
            if reply.ending == "end":
                body += b"0\r\n\r\n"
        elif reply.framing == "length":
            declared = len(body) if reply.ending == "end" else len(body) + 100
            head.append(b"Content-Length: %d" % declared)
        transport.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        if reply.release is not None and not await asyncio.to_thread(reply.release.wait, 10):
            raise TimeoutError("the test never released the cut")
        sock = transport.get_extra_info("socket")
        async with asyncio.timeout(10):
            while transport.get_write_buffer_size() or _unacked(sock):  # noqa: ASYNC110 - no event tells
                await asyncio.sleep(0.005)
        if reply.ending == "rst":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        else:
            transport.close()
        return web.Response()  # never sent: the connection is gone

    async def _sse(self, request: web.Request, reply: SSEReply, received: Received) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", **reply.headers})
        await response.prepare(request)

        def closed() -> bool:
            if request.transport is None or request.transport.is_closing():
                received.connection_closed_at = received.connection_closed_at or time.monotonic()
                return True
            return False

        async def wait(seconds: float) -> bool:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                if closed():
                    return False
                await asyncio.sleep(min(0.01, max(0.0, end - time.monotonic())))
            return not closed()

        if not await wait(reply.first_delay):
            return response
        for number, event in enumerate(reply.events, start=1):
            if number > 1 and not await wait(reply.delay):
                return response
            if reply.pace:
                time.sleep(reply.pace)  # noqa: ASYNC251 (see ``pace``)
            try:
                await response.write(b"data: " + event + b"\n\n")
            except ConnectionError:
                closed()
                return response
            if reply.drop_after == number:
                await asyncio.sleep(0.2)  # let the reader take what was sent before the connection breaks
                request.transport.close()  # type: ignore[union-attr]
                return response
            if reply.pause_after == number and not await wait(reply.pause):
                return response
        if reply.done:
            await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


def _unacked(sock: socket.socket) -> int:
    """Bytes sent on ``sock`` that its peer has not acknowledged yet (Linux's SIOCOUTQ)."""
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0]


def chunk(
    content: str | None = None, *, cid: str = "chatcmpl-upstream", usage: Any = None, **extra: Any
) -> bytes:
    """An OpenAI chat.completion.chunk as the upstream would send it."""
    delta: dict[str, Any] = {} if content is None else {"content": content}
    body: dict[str, Any] = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": 1753357673,
        "model": "gpt-test",
        "choices": [] if usage else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}],
        "usage": usage,
        **extra,
    }
    return orjson.dumps(body)


def text_stream(words: list[str], usage: dict[str, Any] | None = None) -> list[bytes]:
    events = [chunk(word) for word in words]
    if usage is not None:
        events.append(chunk(usage=usage))
    return events


def delta_chunk(
    delta: dict[str, Any], finish_reason: str | None = None, *, cid: str = "chatcmpl-upstream"
) -> bytes:
    return orjson.dumps(
        {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": 1753357673,
            "model": "gpt-test",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
            "usage": None,
        }
    )


def tool_call_stream(
    name: str,
    arguments: str,
    *,
    call_id: str = "call_1",
    index: int = 0,
    preamble: str | None = None,
    usage=None,
    usage_in_finish: bool = False,
) -> list[bytes]:
    """A streamed assistant turn that calls one tool, its arguments split over several chunks; ``usage`` in
    a chunk of its own, or with ``usage_in_finish`` in the finishing chunk, as some providers send it."""
    events = [delta_chunk({"role": "assistant", "content": preamble or ""})]
    start = {"index": index, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}
    events.append(delta_chunk({"tool_calls": [start]}))
    third = max(1, len(arguments) // 3)
    for piece in (arguments[:third], arguments[third : 2 * third], arguments[2 * third :]):
        events.append(delta_chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}))
    if usage_in_finish:
        finish = {**orjson.loads(delta_chunk({}, "tool_calls")), "usage": usage}
        return [*events, orjson.dumps(finish)]
    events.append(delta_chunk({}, "tool_calls"))
    if usage is not None:
        events.append(chunk(usage=usage))
    return events


def completion_body(
    content: str | None, *, tool_calls: list | None = None, usage=None, cid="chatcmpl-b"
) -> bytes:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return orjson.dumps(
        {
            "id": cid,
            "object": "chat.completion",
            "created": 1,
            "model": "gpt-test",
            "choices": [
                {"index": 0, "message": message, "finish_reason": "tool_calls" if tool_calls else "stop"}
            ],
            "usage": usage,
        }
    )
