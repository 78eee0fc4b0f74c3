"""Managed Redis on real servers: a password, TLS with an ACL user and a client certificate, and Sentinel with
a failover during traffic; what `aibridge up`, the API, the workers and `aibridge status` say about it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import openai
import pytest
import redis

from shared.local import find_redis_server, free_port
from tests.fake_upstream import FakeUpstream, SSEReply, text_stream
from tests.gateway import Gateway
from tests.local_up import LocalUp
from tests.redis_servers import RedisProcess, make_certificates, sentinel_setup, tls_redis

PASSWORD = "s3cret-Pa55word"
FAILOVER_DEADLINE = 30.0  # seconds from the master's death to a request served in full (measured: ~2 s)


def wait_for(condition, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what}")
        time.sleep(0.1)


def ready(url: str) -> bool:
    try:
        return httpx2.get(f"{url}/readyz", timeout=1).status_code == 200
    except httpx2.HTTPError:
        return False


def streamed_text(client: openai.OpenAI, model: str) -> str:
    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hi"}], stream=True
    )
    return "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)


def requests_until_served(client: openai.OpenAI, upstream: FakeUpstream, deadline: float) -> list[str]:
    """Streamed requests one after another until one is served in full or ``deadline`` passes: what each
    got (``served``, ``<status> <code>`` before the stream, ``error event`` after it opened)."""
    outcomes: list[str] = []
    while time.monotonic() < deadline and outcomes[-1:] != ["served"]:
        model, _ = upstream.scenario(SSEReply(text_stream(["after", " failover"])))
        try:
            assert streamed_text(client, model) == "after failover"
            outcomes.append("served")
        except openai.APIStatusError as exc:
            code = exc.body.get("code") if isinstance(exc.body, dict) else None
            outcomes.append(f"{exc.status_code} {code}")
            time.sleep(0.1)
        except openai.APIError:
            outcomes.append("error event")
    return outcomes


def status(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shared.cli", "status"], env=env, capture_output=True, text=True, timeout=30
    )


@pytest.fixture
def password_redis(tmp_path: Path) -> Iterator[str]:
    found = find_redis_server()
    assert found is not None, "no redis-server binary"
    port = free_port()
    probe = redis.Redis(port=port, password=PASSWORD, socket_connect_timeout=1)
    server = RedisProcess(found[0], tmp_path, ["--port", str(port), "--requirepass", PASSWORD], probe)
    yield f"redis://:{PASSWORD}@127.0.0.1:{port}/0"
    server.stop()


@pytest.fixture
def tls_acl_redis(tmp_path: Path) -> Iterator[str]:
    certificates = make_certificates(tmp_path)
    server, port = tls_redis(tmp_path, certificates, "gateway", PASSWORD)
    yield (
        f"rediss://gateway:{PASSWORD}@127.0.0.1:{port}/0?ssl_ca_certs={certificates.ca}"
        f"&ssl_certfile={certificates.client_cert}&ssl_keyfile={certificates.client_key}"
    )
    server.stop()


@pytest.mark.parametrize("server", ["password_redis", "tls_acl_redis"])
def test_up_and_status_on_a_managed_redis_say_which_and_never_show_the_password(
    server: str, request: pytest.FixtureRequest, upstream: FakeUpstream, tmp_path: Path
) -> None:
    redis_url = request.getfixturevalue(server)
    port = free_port()
    env = {
        **os.environ,
        "AIBRIDGE_REDIS_URL": redis_url,
        "AIBRIDGE_OPENAI_BASE_URL": upstream.base_url,
        "AIBRIDGE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'records.db'}",
        "AIBRIDGE_LOG_LEVEL": "info",
    }  # the default key prefix: this Redis is the test's own
    with LocalUp(env, port) as up:
        up.wait_ready()
        model, _ = upstream.scenario(SSEReply(text_stream(["managed", " redis"])))
        client = openai.OpenAI(base_url=f"{up.url}/openai/v1", api_key="unused", max_retries=0)
        assert streamed_text(client, model) == "managed redis"
        shown = status(env)
        assert up.stop() == 0, up.output
    output = up.output
    assert shown.returncode == 0 and "live workers      1" in shown.stdout, shown.stderr
    masked = redis_url.replace(PASSWORD, "***")
    assert f"aibridge: using Redis at {masked}, key prefix 'aibridge:'" in output
    assert "give each gateway its own AIBRIDGE_KEY_PREFIX" in output
    assert output.count(f"on Redis at {masked}, key prefix 'aibridge:'") == 2  # the API's and the worker's
    assert PASSWORD not in output + shown.stdout + shown.stderr
    assert "Traceback" not in output


def test_sentinel_failover_during_traffic_gives_the_documented_errors_then_service_resumes(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    servers = sentinel_setup(tmp_path, PASSWORD)
    deployment = None
    try:
        servers.wait_until_watched()
        url = f"redis+sentinel://:{PASSWORD}@127.0.0.1:{servers.sentinel_port}/{servers.name}/0"
        deployment = Gateway(url, upstream.base_url).start()
        client = deployment.client()
        model, _ = upstream.scenario(SSEReply(text_stream(["before", " failover"])))
        assert streamed_text(client, model) == "before failover"
        shown = status(deployment.env)
        assert shown.returncode == 0 and "live workers      1" in shown.stdout, shown.stderr

        slow, _ = upstream.scenario(SSEReply(text_stream(["x"] * 2000), delay=0.01))
        with client.chat.completions.create(
            model=slow, messages=[{"role": "user", "content": "hi"}], stream=True
        ) as running:
            assert next(iter(running)).choices[0].delta.content == "x"
            servers.master.stop()  # SIGKILL: the sentinel promotes the replica
            killed = time.monotonic()
            outcomes = requests_until_served(client, upstream, deadline=killed + FAILOVER_DEADLINE)
            served_after = time.monotonic() - killed
            with pytest.raises(openai.APIError):  # the stream that ran ends with an error event, no [DONE]
                for _chunk in running:
                    pass
        assert outcomes[-1] == "served", (
            f"not served again within {served_after:.1f}s: {outcomes}\n{deployment.logs()}"
        )
        assert servers.current_master_port() == servers.replica_port
        assert "503 queue_unavailable" in outcomes, outcomes  # while no master answered
        assert set(outcomes) <= {"503 queue_unavailable", "502 worker_timeout", "error event", "served"}, (
            outcomes
        )
        shown = status(deployment.env)
        assert shown.returncode == 0 and "live workers      1" in shown.stdout, shown.stderr
        assert PASSWORD not in deployment.output()
        assert "Traceback" not in deployment.output()
    finally:
        if deployment is not None:
            deployment.stop()
        servers.stop()


def test_api_and_worker_started_before_redis_retry_one_line_at_a_time_then_serve(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    port = free_port()  # nothing listens there yet
    deployment = Gateway(f"redis://:{PASSWORD}@127.0.0.1:{port}/0", upstream.base_url).start(wait_ready=False)
    server = None
    try:
        retries = f"Redis at redis://:***@127.0.0.1:{port}/0 does not answer"

        def retried() -> bool:
            return all(deployment.output_of(process).count(retries) >= 3 for process in ("api", "worker"))

        wait_for(retried, "the API and the worker to retry thrice")
        client = deployment.client()
        with pytest.raises(openai.APIStatusError) as refused:  # the API serves meanwhile: 503, as documented
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
        assert refused.value.status_code == 503 and refused.value.body["code"] == "queue_unavailable"

        found = find_redis_server()
        assert found is not None, "no redis-server binary"
        probe = redis.Redis(port=port, password=PASSWORD, socket_connect_timeout=1)
        server = RedisProcess(found[0], tmp_path, ["--port", str(port), "--requirepass", PASSWORD], probe)
        deployment.wait_until(lambda: ready(deployment.url), "the worker live on the Redis started late")
        model, _ = upstream.scenario(SSEReply(text_stream(["late", " but", " here"])))
        assert streamed_text(client, model) == "late but here"
    finally:
        deployment.stop()
        if server is not None:
            server.stop()
    output = deployment.output()
    assert "Traceback" not in output and "retries remaining" not in output and PASSWORD not in output
    for line in output.splitlines():  # every log entry is one line: a continuation line has no level
        assert re.match(r"(\d{4}-\d\d-\d\d [\d:,]+ [A-Z]+ |[A-Z]+: )", line), line
    for process in ("api", "worker"):
        assert f"on Redis at redis://:***@127.0.0.1:{port}/0, key prefix '{deployment.prefix}'" in (
            deployment.output_of(process)
        )
