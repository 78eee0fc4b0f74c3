"""aiohttp against httpx2 as the worker's upstream client: time to first chunk, full-stream time and CPU time
of one streamed chat completion, read line by line as the worker reads it.

    python -m bench.http_clients

Starts the fake upstream (``bench.fake_upstream``) as a subprocess on 127.0.0.1, then, in this one process
(uvloop, as the worker runs), sends sequential streaming requests, alternating the clients request by
request after a warm-up, in two shapes of answer:

* burst: 100 chunks written at once (what the client costs to parse a stream);
* paced: 50 chunks 1 ms apart, the first at once (what each separately arriving chunk costs).

Both clients keep their connection alive between requests. aiohttp is configured as
``shared.upstream.new_session`` configures it; httpx2 with its defaults (``trust_env`` off). Prints a markdown
table on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import aiohttp
import httpx2
import orjson

from bench.processes import log
from bench.stats import percentile

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
TIMEOUT = 30.0

SCENARIOS: dict[str, dict[str, float]] = {
    "burst (100 chunks at once)": {"bench_ttft": 0, "bench_delay": 0, "bench_chunks": 100},
    "paced (50 chunks, 1 ms apart)": {"bench_ttft": 0, "bench_delay": 0.001, "bench_chunks": 50},
}


@dataclass
class Sample:
    ttft: float
    total: float
    cpu: float


@dataclass
class Results:
    samples: list[Sample] = field(default_factory=list)
    errors: int = 0

    def p(self, name: str, q: float) -> float:
        return percentile([getattr(s, name) for s in self.samples], q)


# One streamed request: returns (time to first data line, data lines seen before [DONE]).
Streamer = Callable[[str, bytes], Awaitable[tuple[float, int]]]


def aiohttp_streamer(session: aiohttp.ClientSession) -> Streamer:
    headers = {"Content-Type": "application/json", "Accept-Encoding": "identity"}

    async def stream(url: str, body: bytes) -> tuple[float, int]:
        start = time.perf_counter()
        ttft = math.nan
        events = 0
        async with session.post(url, data=body, headers=headers) as response:
            response.raise_for_status()
            async for line in response.content:
                if line.startswith(b"data:"):
                    if events == 0:
                        ttft = time.perf_counter() - start
                    if line.startswith(b"data: [DONE]"):
                        return ttft, events
                    events += 1
        return ttft, -1

    return stream


def httpx2_streamer(client: httpx2.AsyncClient) -> Streamer:
    headers = {"Content-Type": "application/json", "Accept-Encoding": "identity"}

    async def stream(url: str, body: bytes) -> tuple[float, int]:
        start = time.perf_counter()
        ttft = math.nan
        events = 0
        async with client.stream("POST", url, content=body, headers=headers) as response:
            response.raise_for_status()
            async for line in response.aiter_lines():
                if line.startswith("data:"):
                    if events == 0:
                        ttft = time.perf_counter() - start
                    if line.startswith("data: [DONE]"):
                        return ttft, events
                    events += 1
        return ttft, -1

    return stream


async def timed(stream: Streamer, url: str, body: bytes, expected: int, results: Results) -> None:
    cpu = time.process_time()
    start = time.perf_counter()
    try:
        async with asyncio.timeout(TIMEOUT):
            ttft, events = await stream(url, body)
    except (TimeoutError, aiohttp.ClientError, httpx2.HTTPError, OSError):
        results.errors += 1
        return
    total = time.perf_counter() - start
    if events != expected:
        results.errors += 1
        return
    results.samples.append(Sample(ttft, total, time.process_time() - cpu))


async def measure(url: str, requests: int, warmup: int) -> dict[str, dict[str, Results]]:
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)  # as shared.upstream.new_session
    session = aiohttp.ClientSession(connector=connector, read_bufsize=1 << 20, auto_decompress=True)
    client = httpx2.AsyncClient(trust_env=False, timeout=httpx2.Timeout(TIMEOUT))
    streamers = {"aiohttp": aiohttp_streamer(session), "httpx2": httpx2_streamer(client)}
    measured: dict[str, dict[str, Results]] = {}
    try:
        for scenario, extra in SCENARIOS.items():
            body = orjson.dumps(
                {
                    "model": "bench-model",
                    "messages": [{"role": "user", "content": "hi"}],
                    "stream": True,
                    **extra,
                }
            )
            expected = int(extra["bench_chunks"]) + 1  # and the usage chunk
            for stream in streamers.values():
                for _ in range(warmup):
                    await timed(stream, url, body, expected, Results())
            measured[scenario] = {name: Results() for name in streamers}
            for number in range(requests):
                order = list(streamers) if number % 2 == 0 else list(reversed(streamers))
                for name in order:
                    await timed(streamers[name], url, body, expected, measured[scenario][name])
            log(f"{scenario}: done")
    finally:
        await session.close()
        await client.aclose()
    return measured


def ms(value: float, digits: int = 2) -> str:
    return "n/a" if math.isnan(value) else f"{value * 1000:.{digits}f}"


def report(measured: dict[str, dict[str, Results]], requests: int, elapsed: float) -> str:
    lines = [
        f"# HTTP clients for the upstream ({time.strftime('%Y-%m-%d %H:%M %Z')}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, aiohttp {aiohttp.__version__}, httpx2 {httpx2.__version__}, "
        f"run took {elapsed:.0f} s)",
        "",
        f"{requests} sequential streamed requests per client and shape, alternating clients; times in ms.",
        "",
        "| answer | client | requests | errors | TTFT p50 | TTFT p99 | full stream p50 | full stream p99 "
        "| CPU per request p50 |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for scenario, by_client in measured.items():
        for name, results in by_client.items():
            figures = " | ".join(
                ms(results.p(name, q))
                for name, q in (("ttft", 50), ("ttft", 99), ("total", 50), ("total", 99))
            )
            lines.append(
                f"| {scenario} | {name} | {len(results.samples) + results.errors} | {results.errors} "
                f"| {figures} | {ms(results.p('cpu', 50))} |"
            )
        a, h = by_client["aiohttp"], by_client["httpx2"]
        ttft, total, cpu = (f"{h.p(name, 50) / a.p(name, 50):.2f}x" for name in ("ttft", "total", "cpu"))
        lines.append(f"| {scenario} | **httpx2 / aiohttp, p50** | | | {ttft} | | {total} | | {cpu} |")
    return "\n".join(lines)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


async def wait_for_upstream(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as session:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the fake upstream exited with code {process.returncode}")
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                async with session.get(f"{url}/models") as response:
                    if response.status == 200:
                        return
            if time.monotonic() > deadline:
                raise TimeoutError("the fake upstream did not start")
            await asyncio.sleep(0.05)


def start_upstream(port: int, output: BinaryIO) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "bench.fake_upstream", "--port", str(port)],
        cwd=ROOT,
        stdout=output,
        stderr=subprocess.STDOUT,
    )


async def run(requests: int, warmup: int) -> str:
    began = time.monotonic()
    port = free_port()
    with tempfile.TemporaryFile() as output:
        upstream = start_upstream(port, output)
        try:
            base = f"http://{HOST}:{port}/v1"
            await wait_for_upstream(base, upstream)
            measured = await measure(f"{base}/chat/completions", requests, warmup)
        finally:
            if upstream.poll() is None:
                upstream.send_signal(signal.SIGTERM)
            try:
                upstream.wait(10)
            except subprocess.TimeoutExpired:
                upstream.kill()
                upstream.wait(5)
    return report(measured, requests, time.monotonic() - began)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.http_clients", description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=200, help="measured requests per client and shape")
    parser.add_argument("--warmup", type=int, default=20, help="unmeasured requests per client and shape")
    args = parser.parse_args(argv)

    import uvloop

    print(uvloop.run(asyncio.wait_for(run(args.requests, args.warmup), 600)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
