"""Runs the gateway as real processes (``aibridge api`` and ``aibridge worker``) for the tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx2
import openai

from shared.local import free_port
from tests.processes import spawn

FAST_TIMEOUTS = {
    "AIBRIDGE_KEEPALIVE_INTERVAL": "0.5",
    "AIBRIDGE_HEARTBEAT_INTERVAL": "0.5",
    "AIBRIDGE_HEARTBEAT_TIMEOUT": "3",
    "AIBRIDGE_PICKUP_TIMEOUT": "5",
    "AIBRIDGE_UPSTREAM_CONNECT_TIMEOUT": "2",
    "AIBRIDGE_UPSTREAM_READ_TIMEOUT": "3",
    "AIBRIDGE_LOG_LEVEL": "info",
}


class Gateway:
    def __init__(self, redis_url: str, upstream_url: str, **env: str) -> None:
        self.port = free_port()
        self.prefix = f"test-{uuid.uuid4().hex[:8]}:"
        self.env = {
            **os.environ,
            **FAST_TIMEOUTS,
            "AIBRIDGE_REDIS_URL": redis_url,
            "AIBRIDGE_KEY_PREFIX": self.prefix,
            "AIBRIDGE_OPENAI_BASE_URL": upstream_url,
            "AIBRIDGE_OPENAI_API_KEY": "sk-upstream-test-key",
            "AIBRIDGE_ANTHROPIC_BASE_URL": upstream_url.removesuffix("/v1"),  # the same fake serves both
            "AIBRIDGE_ANTHROPIC_API_KEY": "sk-ant-upstream-test-key",
            "AIBRIDGE_PORT": str(self.port),
            "AIBRIDGE_AUTH": "none",  # on loopback; the tests of client keys turn them on
            **env,
        }
        self.api: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        self.apis: list[subprocess.Popen[bytes]] = []  # beyond the first
        self._logs = Path(tempfile.mkdtemp(prefix="aibridge-test-"))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/openai/v1"

    def resume(self, route: str, streamed: httpx2.Response, after: int) -> httpx2.Response:
        """``GET <route>/<interception id>/events`` of the stream ``streamed`` answered on ``route`` (e.g.
        ``/anthropic/v1/messages``), resumed after its event number ``after`` (from 0)."""
        interception = streamed.headers["x-aibridge-interception-id"]
        ids = [line[4:].decode() for line in streamed.content.split(b"\n") if line.startswith(b"id: ")]
        return httpx2.get(
            f"{self.url}{route}/{interception}/events", headers={"Last-Event-ID": ids[after]}, timeout=30
        )

    def _spawn(self, command: str, **env: str) -> subprocess.Popen[bytes]:
        log = open(self._logs / f"{command}-{time.monotonic_ns()}.log", "wb")
        return spawn(
            [sys.executable, "-m", "shared.cli", command],
            env={**self.env, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def start(self, workers: int = 1, wait_ready: bool = True) -> Gateway:
        if "AIBRIDGE_DATABASE_URL" not in self.env:  # a new file: the API and the workers migrate it at start
            self.env["AIBRIDGE_DATABASE_URL"] = f"sqlite+aiosqlite:///{self._logs / 'records.db'}"
        self.api = self._spawn("api")
        for _ in range(workers):
            self.add_worker()
        self.wait_until(lambda: self._status("/healthz") == 200, "API up")
        if wait_ready and workers:
            self.wait_until(lambda: self._status("/readyz") == 200, "a live worker")
        return self

    def add_api(self) -> tuple[str, subprocess.Popen[bytes]]:
        """Another API instance of the same deployment: its base URL and its process."""
        port = free_port()
        api = self._spawn("api", AIBRIDGE_PORT=str(port))
        self.apis.append(api)
        url = f"http://127.0.0.1:{port}"
        self.wait_until(lambda: self._status("/healthz", url) == 200, "the second API")
        return url, api

    def add_worker(self, **env: str) -> subprocess.Popen[bytes]:
        worker = self._spawn("worker", **env)
        self.workers.append(worker)
        return worker

    def _status(self, path: str, url: str | None = None) -> int | None:
        try:
            return httpx2.get((url or self.url) + path, timeout=1).status_code
        except httpx2.HTTPError:
            return None

    def wait_until(self, condition, what: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if self.api is not None and self.api.poll() is not None:
                raise RuntimeError(f"the API exited:\n{self.logs()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"gave up waiting for {what}:\n{self.logs()}")
            time.sleep(0.05)

    def create_key(self, actor: str, **metadata: str) -> str:
        """A new client key for ``actor`` (``aibridge keys create``, in this deployment's database)."""
        meta = [arg for name, value in metadata.items() for arg in ("--meta", f"{name}={value}")]
        result = subprocess.run(
            [sys.executable, "-m", "shared.cli", "keys", "create", "--actor", actor, *meta],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if result.returncode != 0:
            raise RuntimeError(f"aibridge keys create failed:\n{result.stderr}")
        return result.stdout.strip()

    def output(self) -> str:
        """Everything the deployment's processes have written to stdout and stderr so far."""
        return "".join(p.read_text(errors="replace") for p in sorted(self._logs.glob("*.log")))

    def output_of(self, command: str) -> str:
        """What the processes of ``command`` (``api``, ``worker``) have written so far."""
        return "".join(p.read_text(errors="replace") for p in sorted(self._logs.glob(f"{command}-*.log")))

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}" for p in sorted(self._logs.iterdir())
        )

    def stream_in_background(self, model: str, timeout: float = 20) -> threading.Thread:
        """A streamed chat request running in a thread (join it to wait for its end)."""
        body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": True}
        url = f"{self.base_url}/chat/completions"
        request = threading.Thread(target=httpx2.post, args=(url,), kwargs={"json": body, "timeout": timeout})
        request.start()
        return request

    def client(self, api_key: str = "client-key", **kwargs) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base_url, api_key=api_key, max_retries=0, **kwargs)

    def stop(self) -> None:
        processes = [p for p in [self.api, *self.apis, *self.workers] if p is not None]
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def migrate(url: str) -> None:
    """``aibridge db upgrade`` on the database at ``url``."""
    result = subprocess.run(
        [sys.executable, "-m", "shared.cli", "db", "upgrade"],
        env={**os.environ, "AIBRIDGE_DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    if result.returncode != 0:
        raise RuntimeError(f"aibridge db upgrade failed:\n{result.stderr}")
