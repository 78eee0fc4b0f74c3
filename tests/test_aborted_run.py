"""A test run stopped with SIGTERM (as CI does on a timeout) ends the processes it started with it. Before, an
xdist worker whose controller was gone went on for 5 s (execnet's wait), then interrupted its test, and ended
itself (os._exit) 10 s later, leaving whatever its teardown had not stopped by then."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from tests.mcp_http import ROOT
from tests.processes import is_running, spawn

ENDED_WITHIN = 3.0  # they get SIGKILL from the kernel as pytest ends: well under a second
OUTER_RUN = ("PYTEST_", "AIBRIDGE_TEST_REDIS_URL")  # the inner run is a run of its own, with its own Redis
pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG and /proc are Linux's")

INNER_TEST = """
    import json, os, threading
    from pathlib import Path

    import redis

    from tests.processes import children_of


    def test_start_processes_then_wait(make_gateway, redis_url, mcp_http_url):
        gateway = make_gateway()
        children = children_of(os.getpid())
        assert redis.Redis.from_url(redis_url).info("server")["process_id"] in children
        assert gateway.api.pid in children and gateway.workers[0].pid in children
        written = Path({pids!r} + ".part")
        written.write_text(json.dumps({{"worker": os.getpid(), "children": children}}))
        written.rename({pids!r})
        threading.Event().wait(600)  # until the run is stopped
"""


def test_sigterm_to_pytest_stops_the_redis_server_api_and_worker_it_started(tmp_path):
    pids_file = tmp_path / "pids.json"
    test_file, output = tmp_path / "test_inner.py", tmp_path / "inner-run.log"
    test_file.write_text(textwrap.dedent(INNER_TEST.format(pids=str(pids_file))))
    command = [sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest", "-c", "pyproject.toml"]
    with output.open("wb") as log:  # not a pipe: the processes it starts would hold it open
        run = spawn(
            [*command, "--rootdir", str(ROOT), "-n", "2", "-p", "no:cacheprovider", str(test_file)],
            cwd=ROOT,
            env={name: value for name, value in os.environ.items() if not name.startswith(OUTER_RUN)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    started: list[int] = []
    try:
        deadline = time.monotonic() + 90
        while not pids_file.exists():
            if run.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the inner run started nothing:\n{output.read_text()}")
            time.sleep(0.1)
        recorded = json.loads(pids_file.read_text())
        started = [recorded["worker"], *recorded["children"]]
        assert len(recorded["children"]) >= 4  # redis-server, the MCP server, an API and a worker
        run.send_signal(signal.SIGTERM)
        run.wait(10)
        deadline = time.monotonic() + ENDED_WITHIN
        while survivors := [pid for pid in started if is_running(pid)]:
            assert time.monotonic() < deadline, (
                f"running {ENDED_WITHIN} s after SIGTERM to pytest: {survivors}"
            )
            time.sleep(0.1)
    finally:
        for pid in [pid for pid in started if is_running(pid)]:
            os.kill(pid, signal.SIGKILL)  # what the run left behind (the test has failed)
        if run.poll() is None:
            run.kill()
            run.wait()
