"""Redis killed (SIGKILL) and restarted on its port under load, twenty times: the worker rides through every
outage and serves again within seconds of Redis answering, and still stops within its bound on SIGTERM."""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator

import httpx2
import pytest

from shared.local import find_redis_server, free_port, start_redis
from tests.fake_upstream import SSEReply, text_stream
from tests.gateway import Gateway
from tests.processes import spawn

OUTAGES = [0.0, 0.3, 0.1, 0.6, 0.0, 1.0, 0.2, 0.0, 0.4, 0.8] * 2  # seconds between the kill and the restart
SERVES_WITHIN = 6.0  # seconds after Redis answers again
SHUTDOWN_TIMEOUT = 2.0
SLOW_CHUNKS = 100
EXITS_WITHIN = 2 * SHUTDOWN_TIMEOUT + 1.5  # the jobs' window, the cleanup's, and the interpreter's exit


class OwnRedis:
    """A redis-server of this test's own, which it kills and restarts on the same port."""

    def __init__(self) -> None:
        found = find_redis_server()
        if found is None:
            pytest.fail("no redis-server binary")
        self.binary = found[0]
        self.port = free_port()
        self.workdir = tempfile.mkdtemp(prefix="aibridge-outage-redis-")
        self.process = start_redis(self.binary, self.port, self.workdir, popen=spawn)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def restart(self) -> None:
        self.process = start_redis(
            self.binary, self.port, self.workdir, popen=spawn
        )  # returns once it answers PING

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(10)
        shutil.rmtree(self.workdir, ignore_errors=True)


@pytest.fixture
def own_redis() -> Iterator[OwnRedis]:
    server = OwnRedis()
    yield server
    server.stop()


def serves(deployment: Gateway, model: str) -> bool:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    try:
        with httpx2.stream(
            "POST", f"{deployment.base_url}/chat/completions", json=body, timeout=3
        ) as response:
            text = b"".join(response.iter_bytes())
    except httpx2.HTTPError:
        return False
    return response.status_code == 200 and b"back" in text and text.endswith(b"data: [DONE]\n\n")


def load(deployment: Gateway, model: str, stop: threading.Event, outcomes: list[str]) -> None:
    """Slow streams, one after another until ``stop``, each ending in ``outcomes``: ``complete``,
    ``error`` (an error event or an error answer), or what must never happen: ``cut`` (the stream ends without
    an error or the end marker), ``gap`` (the end marker without every chunk and no error), ``hung``."""
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    while not stop.is_set():
        received = b""
        try:
            with httpx2.stream(
                "POST", f"{deployment.base_url}/chat/completions", json=body, timeout=10
            ) as response:
                for data in response.iter_bytes():
                    received += data
                    if stop.is_set():
                        return
        except httpx2.HTTPError:
            outcomes.append("hung")
            continue
        if b'"error"' in received:
            outcomes.append("error")
        elif not received.endswith(b"data: [DONE]\n\n"):
            outcomes.append("cut")
        else:
            outcomes.append("complete" if received.count(b'"slow"') == SLOW_CHUNKS else "gap")


def test_the_worker_serves_again_after_each_of_twenty_redis_restarts_and_stops_in_time(own_redis, upstream):
    deployment = Gateway(
        own_redis.url, upstream.base_url, AIBRIDGE_WORKER_SHUTDOWN_TIMEOUT=str(SHUTDOWN_TIMEOUT)
    ).start(workers=1)
    worker = deployment.workers[0]
    slow, _ = upstream.scenario(SSEReply(text_stream(["slow"] * SLOW_CHUNKS), delay=0.03))
    quick, _ = upstream.scenario(SSEReply(text_stream(["back"])))
    stop = threading.Event()
    outcomes: list[str] = []
    streams = [threading.Thread(target=load, args=(deployment, slow, stop, outcomes)) for _ in range(6)]
    recoveries: list[float] = []
    try:
        for thread in streams:
            thread.start()
        assert serves(deployment, quick)
        for round_number, outage in enumerate(OUTAGES):
            own_redis.kill()
            if outage:
                stop.wait(outage)  # Redis is down this long: the worker sees its connections fail
            own_redis.restart()
            answering = time.monotonic()
            while not serves(deployment, quick):
                assert worker.poll() is None, f"round {round_number}: the worker exited\n{deployment.logs()}"
                assert time.monotonic() - answering < SERVES_WITHIN, (
                    f"round {round_number}: the worker is alive but serves nothing\n{deployment.logs()}"
                )
            recoveries.append(time.monotonic() - answering)
        assert worker.poll() is None
        worker.send_signal(signal.SIGTERM)  # streams still running: they get the shutdown window
        sent = time.monotonic()
        try:
            worker.wait(EXITS_WITHIN)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the worker ignored SIGTERM for {EXITS_WITHIN}s\n{deployment.logs()}")
        stopped_in = time.monotonic() - sent
        assert stopped_in < EXITS_WITHIN
    finally:
        stop.set()
        for thread in streams:
            thread.join(15)
        deployment.stop()
    print(
        f"served again after each of {len(recoveries)} restarts, at most {max(recoveries):.2f}s after Redis"
        f" answered; stopped {stopped_in:.2f}s after SIGTERM"
    )
    print("load streams:", {outcome: outcomes.count(outcome) for outcome in set(outcomes)})
    assert set(outcomes) <= {"complete", "error"}, outcomes
    output = deployment.output()
    before_sigterm = output.split("shutdown on SIGTERM")[0]
    assert "Traceback" not in before_sigterm, before_sigterm[before_sigterm.find("Traceback") - 500 :][:6000]


def test_a_job_whose_stream_vanished_in_a_restart_fails_rather_than_go_on_with_a_gap(own_redis, upstream):
    """Redis restarts (empty) while a job waits on its upstream, writing nothing: its stream is gone with
    whatever the API had not yet read, so the job's next write must end it with an error, not carry on."""
    deployment = Gateway(own_redis.url, upstream.base_url).start(workers=1)
    try:
        model, _ = upstream.scenario(
            SSEReply(text_stream(["before"] * 3 + ["after"] * 3), pause_after=2, pause=2.0)
        )
        body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": True}
        restarted, after_restart = False, b""
        with httpx2.stream(
            "POST", f"{deployment.base_url}/chat/completions", json=body, timeout=15
        ) as response:
            for data in response.iter_bytes():
                if restarted:
                    after_restart += data
                elif b"before" in data:  # the upstream now pauses: the job writes nothing meanwhile
                    own_redis.kill()
                    own_redis.restart()
                    restarted = True
        assert restarted and b'"error"' in after_restart
        assert b"after" not in after_restart and not after_restart.endswith(b"data: [DONE]\n\n")
    finally:
        deployment.stop()
