"""``aibridge up`` as the tests run it: a real process, ready once its API answers ``/readyz``, stopped with
Ctrl-C as a user stops it; it dies with the test process (tests/processes.py)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from types import TracebackType

import httpx2

from tests.processes import spawn


class LocalUp:
    """``aibridge up --port <port>`` with ``env``; its stdout and stderr together in ``output`` once stopped."""

    def __init__(self, env: dict[str, str], port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.output = ""
        self._process = spawn(
            [sys.executable, "-m", "shared.cli", "up", "--port", str(port)],
            death_signal=signal.SIGTERM,  # it stops its own children
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )

    def __enter__(self) -> LocalUp:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait()

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not self._ready():
            if self._process.poll() is not None:
                raise AssertionError(f"aibridge up exited: {self._process.communicate()[0].decode()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"aibridge up did not answer /readyz within {timeout} s")
            time.sleep(0.1)

    def stop(self, timeout: float = 60) -> int:
        """Ctrl-C; its exit code (``output`` then holds all it printed)."""
        self._process.send_signal(signal.SIGINT)
        self.output = self._process.communicate(timeout=timeout)[0].decode()
        return self._process.returncode

    def _ready(self) -> bool:
        try:
            return httpx2.get(f"{self.url}/readyz", timeout=1).status_code == 200
        except httpx2.HTTPError:
            return False
