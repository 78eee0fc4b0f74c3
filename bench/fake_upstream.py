"""A standalone fake OpenAI upstream for benchmarks: a real aiohttp server, run as its own process.

    python -m bench.fake_upstream --port 9000 --ttft 0.05 --delay 0.01 --chunks 100

``POST /v1/chat/completions`` with ``"stream": true`` answers with ``chunks`` chat.completion.chunk SSE
events, the first after ``ttft`` seconds and the others ``delay`` seconds apart (on a fixed schedule, so the
sleeps do not drift), then a usage chunk and ``data: [DONE]``. Without ``"stream": true`` it answers one
chat.completion after ``ttft``. ``GET /v1/models`` lists one model.

A request may override the timing with the bench-only body fields ``bench_ttft``, ``bench_delay`` and
``bench_chunks`` (the gateway passes unknown fields through unchanged).

The event bytes are encoded once per chunk count and reused, so the server spends its time writing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import signal
import sys
from typing import Any

import orjson
from aiohttp import web

CHUNK_ID = "chatcmpl-bench"
MODEL = "bench-model"
CREATED = 1753357673
CHUNK_TEXT = "tok "
PROMPT_TOKENS = 12


def _chunk(delta: dict[str, Any] | None, usage: dict[str, int] | None = None) -> dict[str, Any]:
    return {
        "id": CHUNK_ID,
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": MODEL,
        "system_fingerprint": None,
        "choices": []
        if delta is None
        else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}],
        "usage": usage,
    }


def _usage(chunks: int) -> dict[str, int]:
    return {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": chunks,
        "total_tokens": PROMPT_TOKENS + chunks,
    }


@functools.lru_cache(maxsize=64)
def stream_events(chunks: int) -> tuple[bytes, ...]:
    """The SSE byte strings of one streamed answer: ``chunks`` content chunks, the usage chunk, ``[DONE]``."""
    events = []
    for index in range(chunks):
        delta: dict[str, Any] = {"content": CHUNK_TEXT}
        if index == 0:
            delta = {"role": "assistant", "content": CHUNK_TEXT, "refusal": None}
        body = _chunk(delta)
        if index == chunks - 1:
            body["choices"][0]["finish_reason"] = "stop"
        events.append(b"data: " + orjson.dumps(body) + b"\n\n")
    events.append(b"data: " + orjson.dumps(_chunk(None, _usage(chunks))) + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    return tuple(events)


@functools.lru_cache(maxsize=64)
def completion_body(chunks: int) -> bytes:
    return orjson.dumps(
        {
            "id": CHUNK_ID,
            "object": "chat.completion",
            "created": CREATED,
            "model": MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": CHUNK_TEXT * chunks, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": _usage(chunks),
        }
    )


MODELS_BODY = orjson.dumps(
    {"object": "list", "data": [{"id": MODEL, "object": "model", "created": CREATED, "owned_by": "bench"}]}
)
SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}


def _number(body: dict[str, Any], name: str, default: float) -> float:
    value = body.get(name)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else default


class FakeOpenAI:
    def __init__(self, ttft: float, delay: float, chunks: int) -> None:
        self.ttft = ttft
        self.delay = delay
        self.chunks = chunks
        stream_events(chunks)  # encode the default answer before the first request
        completion_body(chunks)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_get("/v1/models", self.models)
        return app

    async def models(self, _: web.Request) -> web.Response:
        return web.Response(body=MODELS_BODY, content_type="application/json")

    async def chat(self, request: web.Request) -> web.StreamResponse:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            error = {"error": {"message": "invalid JSON", "type": "invalid_request_error", "code": None}}
            return web.json_response(error, status=400, dumps=lambda v: orjson.dumps(v).decode())
        ttft = max(0.0, _number(body, "bench_ttft", self.ttft))
        delay = max(0.0, _number(body, "bench_delay", self.delay))
        chunks = max(1, min(100_000, int(_number(body, "bench_chunks", self.chunks))))
        loop = asyncio.get_running_loop()
        start = loop.time()
        if body.get("stream") is not True:
            await asyncio.sleep(ttft)
            return web.Response(body=completion_body(chunks), content_type="application/json")
        response = web.StreamResponse(headers=SSE_HEADERS)
        await response.prepare(request)
        events = stream_events(chunks)
        try:
            for index, event in enumerate(events):
                # content chunk i is due at ttft + i*delay; the usage chunk and [DONE] follow the last at once
                due = start + ttft + min(index, chunks - 1) * delay
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                await response.write(event)
            await response.write_eof()
        except ConnectionError:
            pass  # the client left
        return response


async def serve(host: str, port: int, fake: FakeOpenAI) -> None:
    # a client that leaves cancels its handler; a stop does not wait long for streams in flight
    runner = web.AppRunner(
        fake.app(), handle_signals=False, access_log=None, handler_cancellation=True, shutdown_timeout=1.0
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024, reuse_address=True)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(f"fake upstream listening on http://{host}:{port}/v1", flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fake_upstream", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--ttft", type=float, default=0.05, help="seconds before the first chunk")
    parser.add_argument("--delay", type=float, default=0.01, help="seconds between chunks")
    parser.add_argument("--chunks", type=int, default=100, help="content chunks per answer")
    args = parser.parse_args(argv)
    fake = FakeOpenAI(args.ttft, args.delay, max(1, args.chunks))
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on every platform the bench runs on
        asyncio.run(serve(args.host, args.port, fake))
    else:
        uvloop.run(serve(args.host, args.port, fake))
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
