"""What the benches share to run their subprocesses: starting and stopping them, waiting for them, their CPU
time and memory from /proc, the gateway's environment, and the Redis they use."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from shared.local import find_redis_server, free_port, redis_answers, start_redis

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
DEFAULT_REDIS_URL = f"redis://{HOST}:6379/0"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used (Linux /proc; 0 where unavailable)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    """A process's resident set size in KiB (Linux /proc; 0 where unavailable)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def raise_open_files_limit() -> None:
    """As many open files as the hard limit allows (thousands of connections), for this process and the
    ones it starts."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def process_name(pid: int) -> str:
    """The command name of a process (Linux /proc; empty where unavailable)."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


class Processes:
    """Subprocesses with their output in log files; all stopped by ``stop_all``."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def spawn(
        self, name: str, args: list[str], env: dict[str, str] | None = None, python: str = sys.executable
    ) -> subprocess.Popen[bytes]:
        with open(self.logdir / f"{name}.log", "wb") as output:
            process = subprocess.Popen(
                [python, *args], env=env, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT
            )
        self.running[name] = process
        return process

    def check(self) -> None:
        for name, process in self.running.items():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with code {process.returncode}:\n{self.tail(name)}")

    def tail(self, name: str, size: int = 3000) -> str:
        try:
            return (self.logdir / f"{name}.log").read_text(errors="replace")[-size:]
        except OSError:
            return ""

    def log_tails(self) -> None:
        """The last lines of every log in ``logdir`` (the processes', and the load generators'), on stderr."""
        for path in sorted(self.logdir.glob("*.log")):
            log(f"--- last lines of {path.name}\n{self.tail(path.stem)}")

    def stop(self, names: Sequence[str] | None = None) -> None:
        """SIGTERM to the named processes (all by default), SIGKILL to those still running after
        STOP_TIMEOUT; they are forgotten."""
        chosen = {
            name: self.running[name]
            for name in (list(self.running) if names is None else names)
            if name in self.running
        }
        for process in chosen.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for name, process in chosen.items():
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log(f"{name} did not stop on SIGTERM; killing it")
                process.kill()
                process.wait(5)
            del self.running[name]

    def stop_all(self) -> None:
        self.stop()


async def wait_until(check: Callable[[], Awaitable[bool]], what: str, processes: Processes) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        processes.check()
        with contextlib.suppress(Exception):
            if await check():
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what}")
        await asyncio.sleep(0.05)


def gateway_env(redis_url: str, prefix: str, upstream_url: str, port: int, **extra: str) -> dict[str, str]:
    """The environment of a gateway process: none of the caller's ``AIBRIDGE_*`` variables, these instead."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("AIBRIDGE_")}
    env.update(
        AIBRIDGE_REDIS_URL=redis_url,
        AIBRIDGE_KEY_PREFIX=prefix,
        AIBRIDGE_OPENAI_BASE_URL=upstream_url,
        AIBRIDGE_OPENAI_API_KEY="sk-bench",
        AIBRIDGE_HOST=HOST,
        AIBRIDGE_PORT=str(port),
        **extra,
    )
    return env


@dataclass
class RedisServer:
    """The Redis a bench uses: its URL, and the process if the bench started it."""

    url: str
    own: subprocess.Popen[bytes] | None = None

    async def pids(self) -> list[int]:
        """The server's process, if it runs on this machine (for its CPU time)."""
        if self.own is not None:
            return [self.own.pid]
        from redis.asyncio import Redis

        client = Redis.from_url(self.url)
        try:
            pid = int((await client.info("server"))["process_id"])
        finally:
            await client.aclose()
        if "redis" in process_name(pid):
            return [pid]
        log("the Redis server's process is not visible here: its CPU time is not counted")
        return []


@contextlib.asynccontextmanager
async def redis_server(url: str | None, workdir: Path, prefixes: list[str]) -> AsyncIterator[RedisServer]:
    """``url``, or redis://127.0.0.1:6379/0 if it answers, or a redis-server of the bench's own on a free
    port (stopped on exit). On exit the keys under ``prefixes`` (a list the caller may add to) are deleted
    from a server that is not the bench's own."""
    if url is None:
        url = DEFAULT_REDIS_URL
        if not redis_answers(url):
            found = find_redis_server()
            if found is None:
                raise RuntimeError("no Redis answers and no redis-server binary was found")
            port = free_port()
            log(f"no Redis at {DEFAULT_REDIS_URL}; starting {found[0]} on port {port}")
            server = RedisServer(f"redis://{HOST}:{port}/0", start_redis(found[0], port, str(workdir)))
        else:
            server = RedisServer(url)
    else:
        server = RedisServer(url)
    try:
        yield server
    finally:
        if server.own is None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(delete_prefixed(server.url, prefixes), 10)
        else:
            server.own.terminate()
            try:
                server.own.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                server.own.kill()


async def delete_prefixed(redis_url: str, prefixes: Sequence[str]) -> None:
    """Delete the run's keys, and arq's (unprefixed) keys of any job still on the run's queues."""
    from redis.asyncio import Redis

    client = Redis.from_url(redis_url)
    try:
        for prefix in prefixes:
            job_ids = await client.zrange(f"{prefix}queue", 0, -1)
            arq_keys = [
                f"arq:{kind}:".encode() + i for i in job_ids for kind in ("job", "retry", "in-progress")
            ]
            keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
            if keys or arq_keys:
                await client.delete(*keys, *arq_keys)
    finally:
        await client.aclose()


def stop_on_sigterm() -> None:
    """A SIGTERM cancels the current task, so that a run stops through its ``finally`` blocks."""
    task = asyncio.current_task()
    if task is not None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)


async def wait_for_http(url: str, what: str, processes: Processes) -> None:
    """Until ``GET url`` answers 200 (each try at most 2 s), at most START_TIMEOUT."""
    import aiohttp

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:

        async def answers() -> bool:
            async with http.get(url) as response:
                return response.status == 200

        await wait_until(answers, what, processes)


async def wait_for_workers(redis_url: str, prefix: str, count: int, processes: Processes) -> None:
    """Until ``count`` workers of the gateway with this key prefix have announced themselves."""
    from redis.asyncio import Redis

    probe = Redis.from_url(redis_url)
    try:

        async def announced() -> bool:
            return await probe.zcount(f"{prefix}workers", time.time() - 15, "+inf") >= count

        await wait_until(announced, f"{count} worker(s)", processes)
    finally:
        await probe.aclose()
