"""Records that survive: the schema checked at start, records kept through a database outage and a worker's
SIGKILL (the outbox in Redis), the interceptions of a dead worker ended, and token counts that stay sane."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

import httpx2
import pytest
import redis

from shared.families import Family
from shared.job import InterceptionJob
from shared.keys import RedisKeys
from shared.local import free_port
from shared.metrics import WorkerMetrics
from shared.recording.drain import GROUP
from shared.recording.migrate import HEAD, current_revision
from shared.recording.records import RecorderGroup
from shared.token_counts import TokenCounts
from tests.fake_upstream import SSEReply, text_stream
from tests.processes import spawn
from tests.test_recording import HI, interception_id, recorded
from worker.recording import InterceptionRecording


def test_a_rounds_token_counts_and_thoughts_are_recorded_and_counted_by_family_and_provider() -> None:
    records: list = []
    metrics = WorkerMetrics(dict)
    job = InterceptionJob(
        interception_id="i-1",
        family=Family.ANTHROPIC_MESSAGES,
        provider="anthropic",
        body={"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}]},
        streaming=True,
        enqueued_at=time.time(),
    )
    recording = InterceptionRecording(RecorderGroup(RecorderList(records), metrics), job)
    recording.started()
    recording.round_ended(
        "msg_1", TokenCounts(input=0, output=3, cache_read=25, cache_write=9, extra={"x": 1})
    )
    recording.thought("msg_1", "let me think")
    recording.round_ended("msg_2", None)
    start, prompt, usage, thought = records
    assert (start.family, start.provider) == (Family.ANTHROPIC_MESSAGES, "anthropic")
    assert (prompt.msg_id, prompt.prompt) == ("msg_1", "hi")
    assert (usage.input, usage.output, usage.cache_read_input, usage.cache_write_input, usage.extra) == (
        *(0, 3, 25, 9),
        {"x": 1},
    )
    assert (thought.kind, thought.msg_id, thought.content) == ("model_thought", "msg_1", "let me think")
    labels = {"family": "anthropic_messages", "provider": "anthropic"}
    for kind, count in (("input", 0), ("output", 3), ("cache_read", 25), ("cache_write", 9)):
        assert metrics.registry.get_sample_value("aibridge_tokens_total", {**labels, "kind": kind}) == count


class RecorderList:
    def __init__(self, records: list) -> None:
        self._records = records

    def record(self, record) -> None:
        self._records.append(record)


# -- the schema, at start --


def _command_env(redis_url: str, database: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "AIBRIDGE_REDIS_URL": redis_url,
        "AIBRIDGE_KEY_PREFIX": f"test-{uuid.uuid4().hex[:8]}:",
        "AIBRIDGE_DATABASE_URL": f"sqlite+aiosqlite:///{database}",
        "AIBRIDGE_AUTH": "none",
        "AIBRIDGE_PORT": str(free_port()),
        **extra,
    }


@pytest.mark.parametrize("command", ["api", "worker"])
def test_a_process_migrates_an_unmigrated_database_at_start(
    command: str, redis_url: str, tmp_path: Path
) -> None:
    database = tmp_path / "records.db"
    env = _command_env(redis_url, database)
    process = spawn(
        [sys.executable, "-m", "shared.cli", command],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while not database.exists() or asyncio.run(current_revision(env["AIBRIDGE_DATABASE_URL"])) != HEAD:
            assert process.poll() is None, process.communicate()[0].decode()
            assert time.monotonic() < deadline, "the database was not migrated"
            time.sleep(0.1)
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0].decode()
    assert "Traceback" not in output


@pytest.mark.parametrize("command", ["api", "worker"])
def test_without_auto_migrate_a_process_refuses_an_unmigrated_database(
    command: str, redis_url: str, tmp_path: Path
) -> None:
    env = _command_env(redis_url, tmp_path / "records.db", AIBRIDGE_AUTO_MIGRATE="false")
    result = subprocess.run(
        [sys.executable, "-m", "shared.cli", command], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "`aibridge db upgrade`" in line
    assert asyncio.run(current_revision(env["AIBRIDGE_DATABASE_URL"])) is None


# -- a dead worker --


def _worker_pid(client: redis.Redis, keys: RedisKeys, worker_id: bytes) -> int:
    return int(client.hget(keys.worker(worker_id.decode()), "pid"))


def _poll(condition, what: str, timeout: float):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)
    return value


def _complete(gateway, interception: str) -> dict | None:
    """The interception once both its start (the dead worker's drainer may have held it: another claims it)
    and its end are stored."""
    response = httpx2.get(f"{gateway.url}/api/v1/interceptions/{interception}", timeout=5)
    record = response.json() if response.status_code == 200 else {}
    return record if record.get("model") and record.get("ended_at") else None


def test_a_sigkilled_workers_running_interception_ends_as_worker_lost(make_gateway, upstream, redis_client):
    gateway = make_gateway(workers=2, AIBRIDGE_RECORD_CLAIM_IDLE="2")
    keys = RedisKeys(gateway.prefix)
    _poll(lambda: redis_client.zcard(keys.workers) == 2, "two workers", 20)
    model, _ = upstream.scenario(SSEReply(text_stream(["tick"] * 400), delay=0.05))
    request = gateway.stream_in_background(model, timeout=60)
    ((running, worker_id),) = _poll(
        lambda: redis_client.hgetall(keys.open_interceptions).items(), "a start", 20
    )
    os.kill(_worker_pid(redis_client, keys, worker_id), signal.SIGKILL)
    record = _poll(lambda: _complete(gateway, running.decode()), "the interception's records", 30)
    assert (record["outcome"], record["model"]) == ("worker_lost", model)
    assert record["started_at"] <= record["ended_at"]
    request.join(60)
    assert not redis_client.hexists(keys.open_interceptions, running)


# -- a long database outage and a SIGKILL --


def _postgres_reachable() -> bool:
    url = urlparse(
        os.environ.get("AIBRIDGE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    )
    try:
        socket.create_connection((url.hostname or "127.0.0.1", url.port or 5432), timeout=1).close()
    except OSError:
        return False
    return True


OUTAGE = 60.0
STREAMS = 50


@pytest.mark.parametrize(
    "recording_database", ["postgres" if _postgres_reachable() else "sqlite"], indirect=True
)
def test_records_survive_a_long_database_outage_and_a_worker_sigkill(
    recording_database, make_gateway, upstream, redis_client
):
    gateway = make_gateway(
        workers=2, AIBRIDGE_DATABASE_URL=recording_database.url, AIBRIDGE_RECORD_CLAIM_IDLE="5"
    )
    keys = RedisKeys(gateway.prefix)
    _poll(lambda: redis_client.zcard(keys.workers) == 2, "two workers", 20)
    reported = {}
    for number in range(STREAMS):
        usage = {
            "prompt_tokens": 1000 + number,
            "completion_tokens": 1 + number,
            "total_tokens": 1001 + 2 * number,
            "prompt_tokens_details": {"cached_tokens": number % 7},
        }
        model, _ = upstream.scenario(SSEReply(text_stream(["a", "b", "c"], usage=usage), delay=0.05))
        reported[model] = (1000 + number - number % 7, 1 + number, number % 7)

    def stream(model: str) -> tuple[str, str]:
        body = {"model": model, "messages": HI, "stream": True}
        response = httpx2.post(f"{gateway.base_url}/chat/completions", json=body, timeout=60)
        assert response.status_code == 200 and response.content.endswith(b"data: [DONE]\n\n")
        return interception_id(response), model

    with recording_database.outage():
        began = time.monotonic()
        with ThreadPoolExecutor(STREAMS) as pool:
            models = dict(pool.map(stream, reported))
        assert time.monotonic() - began < OUTAGE / 2, "the streams waited for the database"
        consumers = _poll(
            lambda: [c for c in redis_client.xinfo_consumers(keys.records, GROUP) if c["pending"]],
            "a worker holding records",
            10,
        )
        victim = max(consumers, key=lambda consumer: consumer["pending"])
        os.kill(_worker_pid(redis_client, keys, victim["name"]), signal.SIGKILL)
        assert redis_client.xlen(keys.records) >= 4 * STREAMS  # none written yet: all in the outbox
        time.sleep(max(0.0, OUTAGE - (time.monotonic() - began)))  # the outage lasts its full length

    for interception, model in models.items():
        record = recorded(gateway, interception, timeout=90)
        assert (record["model"], record["provider"], record["outcome"]) == (model, "openai", "ok")
        assert [p["prompt"] for p in record["prompts"]] == ["how many tokens?"]
        assert [
            (u["input_tokens"], u["output_tokens"], u["cache_read_tokens"]) for u in record["token_usages"]
        ] == [reported[model]]
    _poll(lambda: redis_client.xlen(keys.records) == 0, "the outbox emptied", 20)
    assert redis_client.xpending(keys.records, GROUP)["pending"] == 0
    assert redis_client.hlen(keys.open_interceptions) == 0
    assert "records of a stopped worker" in gateway.output()  # the victim's, claimed by the survivor
