"""``aibridge status``: the operator's screen, read from Redis while a deployment works."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx2

from shared.keys import RedisKeys
from tests.fake_upstream import SSEReply, text_stream
from tests.test_metrics import samples

HI = [{"role": "user", "content": "hi"}]


def status(deployment) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "shared.cli", "status"],
        env={**os.environ, **deployment.env},
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def line(screen: str, label: str) -> str:
    return next(row for row in screen.splitlines() if row.startswith(label)).removeprefix(label).strip()


def status_once(deployment, label: str, value: str, timeout: float) -> str:
    """The first screen whose ``label`` line shows ``value``, polled for up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while line(screen := status(deployment), label) != value:
        assert time.monotonic() < deadline, f"{label} never showed {value}:\n{screen}"
    return screen


def test_status_shows_workers_running_jobs_and_the_queue(make_gateway, upstream):
    deployment = make_gateway()
    model, _ = upstream.scenario(SSEReply(text_stream(["slow"] * 30), delay=0.1))
    running = deployment.stream_in_background(model)
    # the worker announces its running jobs every heartbeat interval (0.5 s here)
    screen = status_once(deployment, "jobs in progress", "1", 10)
    running.join(20)
    assert line(screen, "queue depth") == "0"
    assert line(screen, "jobs in progress") == "1"
    assert line(screen, "live workers") == "1"
    (worker_row,) = [row for row in screen.splitlines() if row.endswith(" live")]
    assert worker_row.split()[2] == str(deployment.workers[0].pid)
    assert worker_row.split()[3] == "1"


def test_status_shows_the_oldest_waiting_job_when_no_worker_takes_it(make_gateway, upstream):
    deployment = make_gateway(workers=0, AIBRIDGE_PICKUP_TIMEOUT="8")
    model, _ = upstream.scenario(SSEReply(text_stream(["never"])))
    sent = time.monotonic()
    waiting = deployment.stream_in_background(model, timeout=12)
    time.sleep(1.5)  # the job ages
    screen = status(deployment)
    elapsed = time.monotonic() - sent  # the command itself may take seconds to start on a busy machine
    waiting.join(15)
    assert line(screen, "queue depth") == "1"
    assert line(screen, "live workers") == "0"
    age = float(line(screen, "oldest waiting").removesuffix("s ago"))
    assert 1.0 <= age <= elapsed + 0.05  # shown to 0.1 s
    assert "no workers have announced themselves" in screen


def test_a_killed_workers_jobs_stop_counting_as_in_progress_once_its_heartbeat_is_stale(
    make_gateway, upstream
):
    deployment = make_gateway()
    model, _ = upstream.scenario(SSEReply(text_stream(["slow"] * 200), delay=0.1))
    running = [deployment.stream_in_background(model) for _ in range(2)]
    metric = ("aibridge_jobs_in_progress", ())
    status_once(deployment, "jobs in progress", "2", 10)
    assert samples(f"{deployment.url}/metrics")[metric] == 2
    worker = deployment.workers[0]
    worker.send_signal(signal.SIGKILL)  # its queue entries and arq's in-progress keys outlive it
    worker.wait(10)
    screen = status_once(deployment, "live workers", "0", 15)  # its heartbeat went stale
    assert line(screen, "jobs in progress") == "0", screen
    assert samples(f"{deployment.url}/metrics")[metric] == 0
    for request in running:
        request.join(20)


def test_a_job_that_expired_before_any_worker_took_it_is_dropped_with_one_warning_line(
    make_gateway, upstream, redis_client
):
    deployment = make_gateway(workers=0, AIBRIDGE_PICKUP_TIMEOUT="1")
    model, scenario = upstream.scenario(SSEReply(text_stream(["never"])))
    body = {"model": model, "messages": HI, "stream": True}
    expired = []
    for _ in range(3):
        response = httpx2.post(f"{deployment.base_url}/chat/completions", json=body, timeout=10)
        assert response.status_code == 503
        expired.append(response.headers["X-AIBridge-Interception-Id"])
    deployment.add_worker()

    def warnings(job_id: str) -> list[str]:
        return [row for row in deployment.output().splitlines() if job_id in row and "expired" in row]

    deployment.wait_until(lambda: all(warnings(job_id) for job_id in expired), "the expired jobs dropped")
    output = deployment.output()
    assert "Traceback" not in output, output
    assert [len(warnings(job_id)) for job_id in expired] == [1, 1, 1], output
    assert scenario.received == []
    assert line(status(deployment), "queue depth") == "0"
    assert redis_client.zcard(RedisKeys(deployment.prefix).queue) == 0  # off arq's queue too
