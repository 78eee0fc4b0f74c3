"""What ``bench.run`` sends its streams to: the fake upstream directly, aibridge (one API and one or two
workers, optionally with an MCP tool injected), or LiteLLM's proxy, for one API family (chat completions,
Anthropic Messages or OpenAI Responses). Each target starts its processes, knows their ids (for CPU time and memory) and stops
them."""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bench import litellm_proxy
from bench.mcp_tool_server import PATH as MCP_PATH
from bench.mcp_tool_server import SERVER_NAME as MCP_SERVER_NAME
from bench.processes import (
    HOST,
    Processes,
    gateway_env,
    log,
    wait_for_http,
    wait_for_workers,
    wait_until,
)
from shared.local import free_port

RUNS = ("direct", "aibridge", "aibridge-2w", "litellm", "aibridge-mcp")
DESCRIPTIONS = {
    "direct": "the fake upstream, called directly",
    "aibridge": "aibridge, one API and one worker",
    "aibridge-2w": "aibridge, one API and two workers",
    "litellm": "LiteLLM proxy, one process",
    "aibridge-mcp": "aibridge, one API and one worker, one MCP tool call per request (fast tool)",
}
FAMILIES = ("chat", "anthropic", "responses")
FAMILY_TITLES = {
    "chat": "Chat completions",
    "anthropic": "Anthropic Messages",
    "responses": "OpenAI Responses",
}
# what a family's stream holds, what the load generator counts as a chunk in it and where it ends
FAMILY_STREAMS = {
    "chat": "{chunks} content chunks, a usage chunk and `[DONE]` with the last; a chunk is a `data:` event",
    "anthropic": "{chunks} `content_block_delta` text deltas, `message_start`, `content_block_start` and "
    "`ping` with the first, `content_block_stop`, `message_delta` (usage) and `message_stop` with the last; a "
    "chunk is a `content_block_delta` event, the end `message_stop`",
    "responses": "{chunks} `response.output_text.delta` events, `response.created`, `response.in_progress`, "
    "`response.output_item.added` and `response.content_part.added` with the first, the three `...done` events "
    "and `response.completed` (usage) with the last, each event with its `sequence_number`; a chunk is a "
    "`response.output_text.delta` event (the first one is the first token), the end `response.completed`",
}
# route per family: (direct and LiteLLM, aibridge)
PATHS = {
    "chat": ("/v1/chat/completions", "/openai/v1/chat/completions"),
    "anthropic": ("/v1/messages", "/anthropic/v1/messages"),
    "responses": ("/v1/responses", "/openai/v1/responses"),
}
TOOL_MODE_FAMILIES = ("chat",)  # the fake upstream answers with a tool call in these only
ANTHROPIC_MODEL = litellm_proxy.ANTHROPIC_MODEL
HEADERS = {"anthropic-version": "2023-06-01"}  # what Anthropic clients send (the chat routes ignore it)
TOOL_WAIT = 30.0
WARM_UP_STREAMS = 3


def chat_body(**extra: Any) -> dict[str, Any]:
    """The request every chat stream sends (``extra``: the fake upstream's bench_* overrides)."""
    return {
        "model": "bench-model",
        "messages": [{"role": "user", "content": "Say something long."}],
        "stream": True,
        "stream_options": {"include_usage": True},
        **extra,
    }


def anthropic_body(**extra: Any) -> dict[str, Any]:
    """The request every Anthropic stream sends (``extra`` as ``chat_body``'s)."""
    return {
        "model": ANTHROPIC_MODEL,
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": "Say something long."}],
        "stream": True,
        **extra,
    }


def responses_body(**extra: Any) -> dict[str, Any]:
    """The request every Responses stream sends (``extra`` as ``chat_body``'s)."""
    return {"model": "bench-model", "input": "Say something long.", "stream": True, **extra}


BODIES = {"chat": chat_body, "anthropic": anthropic_body, "responses": responses_body}


def request_body(family: str, **extra: Any) -> dict[str, Any]:
    return BODIES[family](**extra)


def short_body(family: str) -> dict[str, Any]:
    """A one-chunk answer, at once."""
    return request_body(family, bench_ttft=0, bench_delay=0, bench_chunks=1)


def unsupported(run: str, family: str) -> str | None:
    """Why ``run`` has no ``family`` variant (None if it has)."""
    if run == "aibridge-mcp" and family not in TOOL_MODE_FAMILIES:
        title = FAMILY_TITLES[family]
        return f"no {title} variant (the fake upstream has no {title} tool mode)"
    return None


@dataclass
class Upstream:
    """The fake upstream's process and timing."""

    port: int
    ttft: float
    delay: float
    chunks: int

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/v1"

    @property
    def anthropic_url(self) -> str:
        """The base URL as Anthropic clients take it (they append /v1/messages)."""
        return f"http://{HOST}:{self.port}"

    @property
    def stream_seconds(self) -> float:
        """One streamed answer, from the request to its last chunk."""
        return self.ttft + (self.chunks - 1) * self.delay

    @property
    def tool_round_seconds(self) -> float:
        """One answer that calls a tool (three chunks)."""
        return self.ttft + 2 * self.delay


@dataclass
class Target:
    """One run's endpoint and processes. ``roles``: process ids by role (``api``, ``workers``, ``litellm``,
    ``mcp server``); ``gateway_roles``: those whose memory counts per concurrent stream."""

    run: str
    family: str
    port: int
    path: str
    nominal_seconds: float  # a stream's duration without any gateway
    roles: dict[str, list[int]] = field(default_factory=dict)
    gateway_roles: tuple[str, ...] = ()
    process_names: list[str] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)


class Deployments:
    """Starts and stops the targets' processes (all in ``processes``)."""

    def __init__(
        self,
        processes: Processes,
        upstream: Upstream,
        redis_url: str,
        prefixes: list[str],
        max_concurrency: int,
        litellm_python: str | None,
    ) -> None:
        self.processes = processes
        self.upstream = upstream
        self.redis_url = redis_url
        self.prefixes = prefixes
        self.max_concurrency = max_concurrency
        self.litellm_python = litellm_python
        self.workdir = Path(tempfile.mkdtemp(prefix="runs-", dir=processes.logdir))

    async def start(self, run: str, family: str) -> Target:
        if run == "direct":
            return Target(run, family, self.upstream.port, PATHS[family][0], self.upstream.stream_seconds)
        if run == "litellm":
            return await self._litellm(family)
        workers = 2 if run == "aibridge-2w" else 1
        return await self._aibridge(run, family, workers, mcp=run == "aibridge-mcp")

    def stop(self, target: Target) -> None:
        self.processes.stop(target.process_names)

    async def _aibridge(self, run: str, family: str, workers: int, mcp: bool) -> Target:
        port = free_port()
        prefix = f"bench-{run}-{family}-{time.strftime('%H%M%S')}:"
        self.prefixes.append(prefix)
        database = self.workdir / f"{run}-{family}.db"
        extra = {
            "AIBRIDGE_ANTHROPIC_BASE_URL": self.upstream.anthropic_url,
            "AIBRIDGE_ANTHROPIC_API_KEY": "sk-ant-bench",
            "AIBRIDGE_DATABASE_URL": f"sqlite+aiosqlite:///{database}",
            "AIBRIDGE_WORKER_MAX_JOBS": str(self.max_concurrency + 100),
            "AIBRIDGE_MAX_QUEUE_DEPTH": "1000000",
            "AIBRIDGE_LOG_LEVEL": "warning",  # no line per request, as LiteLLM's run
            "AIBRIDGE_AUTH": "none",  # no client keys (allowed on loopback), as LiteLLM runs without a master key
        }
        target = Target(run, family, port, PATHS[family][1], self.upstream.stream_seconds)
        if mcp:
            mcp_port = free_port()
            name = f"{run}-mcp-server"
            server = self.processes.spawn(name, ["-m", "bench.mcp_tool_server", "--port", str(mcp_port)])
            target.process_names.append(name)
            target.roles["mcp server"] = [server.pid]
            servers = [{"name": MCP_SERVER_NAME, "url": f"http://{HOST}:{mcp_port}{MCP_PATH}"}]
            extra["AIBRIDGE_MCP_SERVERS"] = orjson.dumps(servers).decode()
            target.nominal_seconds += self.upstream.tool_round_seconds
            await wait_until(lambda: port_open(mcp_port), "the MCP server", self.processes)
        env = gateway_env(self.redis_url, prefix, self.upstream.url, port, **extra)
        migrate = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "shared.cli", "db", "upgrade"),
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        if await asyncio.wait_for(migrate.wait(), 60) != 0:
            raise RuntimeError(f"{run}: `python -m shared.cli db upgrade` failed")
        api = self.processes.spawn(f"{run}-api", ["-m", "shared.cli", "api"], env)
        target.process_names.append(f"{run}-api")
        target.roles["api"] = [api.pid]
        target.roles["workers"] = []
        for number in range(1, workers + 1):
            name = f"{run}-worker-{number}"
            target.roles["workers"].append(
                self.processes.spawn(name, ["-m", "shared.cli", "worker"], env).pid
            )
            target.process_names.append(name)
        target.gateway_roles = ("api", "workers")
        await wait_for_http(f"http://{HOST}:{port}/readyz", f"{run}: the API's /readyz", self.processes)
        await wait_for_workers(self.redis_url, prefix, workers, self.processes)
        if mcp:
            await self._tools_offered(target)
        return target

    async def warm_up(self, target: Target) -> None:
        """A few short streams through the target, one at a time (a proxy's first request can take a
        second: imports, connection pools)."""
        import aiohttp

        url = f"http://{HOST}:{target.port}{target.path}"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            for _ in range(WARM_UP_STREAMS):
                async with http.post(url, json=short_body(target.family), headers=HEADERS) as response:
                    text = await response.text()
                    if response.status != 200:
                        raise RuntimeError(
                            f"{target.run}: warm-up request answered {response.status}: {text}"
                        )

    async def _tools_offered(self, target: Target) -> None:
        """Until a request through the gateway makes the fake upstream answer with a tool call (the worker
        lists the MCP server's tools in the background after it starts)."""
        import aiohttp

        url = f"http://{HOST}:{target.port}{target.path}"
        stats_url = f"http://{HOST}:{self.upstream.port}/bench/stats"
        body = short_body(target.family)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:

            async def tool_calls() -> int:
                async with http.get(stats_url) as response:
                    return (await response.json())["tool_calls"]

            async def tool_called() -> bool:
                before = await tool_calls()
                async with http.post(url, json=body) as response:
                    await response.read()
                return await tool_calls() > before

            deadline = time.monotonic() + TOOL_WAIT
            while not await tool_called():
                self.processes.check()
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"{target.run}: the gateway did not offer the MCP tool within {TOOL_WAIT:g} s"
                    )
                await asyncio.sleep(0.2)

    async def _litellm(self, family: str) -> Target:
        python = await asyncio.to_thread(litellm_proxy.python_for, self.litellm_python)
        version = await asyncio.to_thread(litellm_proxy.version, python)
        port = free_port()
        config = litellm_proxy.write_config(self.workdir, self.upstream.url, self.upstream.anthropic_url)
        process = self.processes.spawn(
            "litellm", litellm_proxy.proxy_args(config, port), litellm_proxy.proxy_env(), python=python
        )
        target = Target("litellm", family, port, PATHS[family][0], self.upstream.stream_seconds)
        target.process_names.append("litellm")
        target.roles["litellm"] = [process.pid]
        target.gateway_roles = ("litellm",)
        target.notes = {
            "litellm_version": version,
            "litellm_python": python,
            "litellm_config": config.read_text(),
        }
        await wait_for_http(
            f"http://{HOST}:{port}/health/liveliness", "LiteLLM's /health/liveliness", self.processes
        )
        log(f"LiteLLM {version} ready ({python})")
        return target


async def port_open(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection(HOST, port)
    except OSError:
        return False
    writer.close()
    return True
