"""``aibridge status``: the operator's screen, read from Redis while a deployment works."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from tests.fake_upstream import SSEReply, text_stream

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


def test_status_shows_workers_running_jobs_and_the_queue(make_gateway, upstream):
    deployment = make_gateway()
    model, _ = upstream.scenario(SSEReply(text_stream(["slow"] * 30), delay=0.1))
    running = deployment.stream_in_background(model)
    time.sleep(1.2)  # the worker announces its running jobs every heartbeat interval (0.5 s here)
    screen = status(deployment)
    running.join(20)
    assert line(screen, "queue depth") == "0"
    assert line(screen, "jobs in progress") == "1"
    assert line(screen, "live workers") == "1"
    (worker_row,) = [row for row in screen.splitlines() if row.endswith(" live")]
    assert worker_row.split()[2] == str(deployment.workers[0].pid)
    assert worker_row.split()[3] == "1"


def test_status_shows_the_oldest_waiting_job_when_no_worker_takes_it(make_gateway, upstream):
    deployment = make_gateway(workers=0, AIBRIDGE_PICKUP_TIMEOUT="4")
    model, _ = upstream.scenario(SSEReply(text_stream(["never"])))
    waiting = deployment.stream_in_background(model, timeout=10)
    time.sleep(1.5)
    screen = status(deployment)
    waiting.join(10)
    assert line(screen, "queue depth") == "1"
    assert line(screen, "live workers") == "0"
    age = float(line(screen, "oldest waiting").removesuffix("s ago"))
    assert 1.0 <= age < 4
    assert "no workers have announced themselves" in screen
