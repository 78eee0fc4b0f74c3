from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator

import pytest
import redis

from shared.local import find_redis_server, free_port, start_redis
from tests.fake_upstream import FakeUpstream
from tests.gateway import Gateway
from tests.mcp_http import ROOT, HttpServer


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """AIBRIDGE_TEST_REDIS_URL, or a redis-server of the suite's own on a free port."""
    if url := os.environ.get("AIBRIDGE_TEST_REDIS_URL"):
        yield url
        return
    found = find_redis_server()
    if found is None:
        pytest.fail(
            "no redis-server binary: install one (Debian: redis-server) or set AIBRIDGE_TEST_REDIS_URL"
        )
    workdir = tempfile.mkdtemp(prefix="aibridge-test-redis-")
    port = free_port()
    process = start_redis(found[0], port, workdir)
    yield f"redis://127.0.0.1:{port}/0"
    process.terminate()
    process.wait(10)
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def upstream() -> Iterator[FakeUpstream]:
    fake = FakeUpstream().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="session")
def gateway(redis_url: str, upstream: FakeUpstream) -> Iterator[Gateway]:
    """One API and one worker shared by the tests that do not need a deployment of their own."""
    running = Gateway(redis_url, upstream.base_url).start()
    yield running
    running.stop()


@contextlib.contextmanager
def deployments(redis_url: str, upstream: FakeUpstream) -> Iterator:
    made: list[Gateway] = []

    def make(workers: int = 1, wait_ready: bool = True, **env: str) -> Gateway:
        upstream_url = env.pop("AIBRIDGE_OPENAI_BASE_URL", upstream.base_url)
        made.append(Gateway(redis_url, upstream_url, **env).start(workers, wait_ready))
        return made[-1]

    try:
        yield make
    finally:
        for running in made:
            running.stop()


@pytest.fixture
def make_gateway(redis_url: str, upstream: FakeUpstream) -> Iterator:
    """Deployments of a test's own (other settings, or processes the test will kill)."""
    with deployments(redis_url, upstream) as make:
        yield make


@pytest.fixture(scope="module")
def make_gateway_module(redis_url: str, upstream: FakeUpstream) -> Iterator:
    """Deployments shared by the tests of one module."""
    with deployments(redis_url, upstream) as make:
        yield make


@pytest.fixture(scope="session")
def mcp_http_url() -> Iterator[str]:
    """The test MCP server over streamable HTTP."""
    server = HttpServer().start()
    yield server.url
    server.kill()


@pytest.fixture(scope="session")
def tool_gateway(redis_url: str, upstream: FakeUpstream, mcp_http_url: str) -> Iterator[Gateway]:
    """A deployment with MCP servers: "test" (HTTP), "coder" (stdio), "down" (nothing listens) and
    "filtered" (HTTP, offering only echo and slow)."""
    stdio = {
        "command": sys.executable,
        "args": ["-m", "tests.mcp_server", "--stdio"],
        "env": {"PYTHONPATH": str(ROOT)},
    }
    servers = [
        {"name": "test", "url": mcp_http_url},
        {"name": "coder", **stdio},
        {"name": "down", "url": f"http://127.0.0.1:{free_port()}/mcp"},
        {"name": "filtered", "url": mcp_http_url, "allow": "^(echo|add|slow)$", "deny": "^add$"},
    ]
    with deployments(redis_url, upstream) as make:
        yield make(
            AIBRIDGE_MCP_SERVERS=json.dumps(servers),
            AIBRIDGE_MCP_MAX_ROUNDS="4",
            AIBRIDGE_MCP_CALL_TIMEOUT="40",
        )


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()
