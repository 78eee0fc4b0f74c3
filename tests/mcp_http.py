"""The test MCP server (tests/mcp_server.py) over streamable HTTP, as a subprocess on a free port."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

from shared.local import free_port
from tests.processes import spawn

ROOT = Path(__file__).resolve().parent.parent


class HttpServer:
    """The test server over streamable HTTP in a subprocess; can be killed, and started again on its port."""

    def __init__(self, *extra: str, port: int | None = None) -> None:
        self.port = port or free_port()
        self.extra = extra
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def start(self) -> HttpServer:
        command = [sys.executable, "-m", "tests.mcp_server", "--http", "--port", str(self.port), *self.extra]
        self.process = spawn(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"test MCP server exited with {self.process.returncode}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.kill()
        raise RuntimeError("test MCP server did not accept connections within 15 s")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)
