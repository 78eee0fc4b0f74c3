from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest
import redis

from shared.local import find_redis_server, free_port, start_redis
from tests.fake_upstream import FakeUpstream
from tests.gateway import Gateway


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


@pytest.fixture
def make_gateway(redis_url: str, upstream: FakeUpstream) -> Iterator:
    """Deployments of a test's own (other settings, or processes the test will kill)."""
    made: list[Gateway] = []

    def make(workers: int = 1, wait_ready: bool = True, **env: str) -> Gateway:
        upstream_url = env.pop("AIBRIDGE_OPENAI_BASE_URL", upstream.base_url)
        made.append(Gateway(redis_url, upstream_url, **env).start(workers, wait_ready))
        return made[-1]

    yield make
    for running in made:
        running.stop()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()
