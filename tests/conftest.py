from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import asyncpg
import pytest
import redis

from shared.local import find_redis_server, free_port, start_redis
from tests.fake_upstream import FakeUpstream
from tests.gateway import Gateway, migrate
from tests.mcp_http import ROOT, HttpServer
from tests.processes import die_with_parent, spawn
from tests.tcp_proxy import TcpProxy


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER"):  # an xdist worker ends with the controller, if it is killed
        die_with_parent()


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
    process = start_redis(found[0], port, workdir, popen=spawn)
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


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    """A PostgreSQL server the suite may create databases on: AIBRIDGE_TEST_POSTGRES_URL, else the local one."""
    url = os.environ.get("AIBRIDGE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    try:
        asyncio.run(asyncio.wait_for(_postgres(url, "SELECT 1"), 5))
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        pytest.skip(f"no PostgreSQL reachable at {url} ({exc}); set AIBRIDGE_TEST_POSTGRES_URL")
    return url


async def _postgres(url: str, statement: str) -> None:
    connection = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@dataclass
class RecordingDatabase:
    """A migrated, empty recording database, and how to take it away from the gateway for a while."""

    url: str
    outage: Callable[[], contextlib.AbstractContextManager[None]]


@contextlib.contextmanager
def _sqlite_lock(path: Path) -> Iterator[None]:
    lock = sqlite3.connect(path, timeout=5, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")  # every write of the gateway fails while this is held
    try:
        yield
    finally:
        lock.execute("ROLLBACK")
        lock.close()


@contextlib.contextmanager
def _cut(proxy: TcpProxy) -> Iterator[None]:
    proxy.cut()
    try:
        yield
    finally:
        proxy.restore()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def recording_database(request: pytest.FixtureRequest, tmp_path_factory) -> Iterator[RecordingDatabase]:
    """SQLite (an outage: the file locked by another connection) or a PostgreSQL database of its own, reached
    through a TCP proxy (an outage: the proxy drops and refuses connections)."""
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("records") / "records.db"
        url = f"sqlite+aiosqlite:///{path}"
        migrate(url)
        yield RecordingDatabase(url, lambda: _sqlite_lock(path))
        return
    admin = request.getfixturevalue("postgres_admin_url")
    name = f"aibridge_test_{uuid.uuid4().hex[:10]}"
    asyncio.run(_postgres(admin, f"CREATE DATABASE {name}"))
    server = urlparse(admin.replace("postgresql+asyncpg://", "postgresql://"))
    proxy = TcpProxy(server.hostname or "127.0.0.1", server.port or 5432).start()
    user = f"{server.username}@" if server.username else ""
    try:
        migrate(f"postgresql+asyncpg://{server.netloc}/{name}")
        yield RecordingDatabase(
            f"postgresql+asyncpg://{user}127.0.0.1:{proxy.port}/{name}", lambda: _cut(proxy)
        )
    finally:
        proxy.stop()
        asyncio.run(_postgres(admin, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest.fixture(scope="module")
def recording_gateway(
    recording_database: RecordingDatabase, redis_url: str, upstream: FakeUpstream, mcp_http_url: str
) -> Iterator[Gateway]:
    """A deployment that records into a fresh database, with the test MCP server as "test"."""
    servers = json.dumps([{"name": "test", "url": mcp_http_url}])
    with deployments(redis_url, upstream) as make:
        yield make(AIBRIDGE_DATABASE_URL=recording_database.url, AIBRIDGE_MCP_SERVERS=servers)


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()
