"""A helper process driven over a pipe: JSON-line commands on its stdin, one JSON-line answer each on its
stdout (its stderr goes to a log file). Both sides are here: ``PipedProcess`` for the parent,
``commands`` and ``answer`` for the child."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from bench.processes import ROOT

LINE_LIMIT = 1 << 26  # an answer can carry every stream's figures


def open_log(path: Path) -> BinaryIO:
    return open(path, "wb")  # the caller closes it


class PipedProcess:
    """The parent's handle on a helper process (``python -m <module> <args>``)."""

    def __init__(self, process: asyncio.subprocess.Process, name: str) -> None:
        self._process = process
        self.name = name

    @classmethod
    async def start(cls, name: str, args: list[str], log_path: Path) -> PipedProcess:
        with open_log(log_path) as stderr:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                *args,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
                cwd=ROOT,
                limit=LINE_LIMIT,
            )
        return cls(process, name)

    @property
    def pid(self) -> int:
        return self._process.pid

    async def send(self, command: dict[str, Any]) -> None:
        assert self._process.stdin is not None
        self._process.stdin.write(orjson.dumps(command) + b"\n")
        await asyncio.wait_for(self._process.stdin.drain(), 5)

    async def receive(self, within: float) -> dict[str, Any]:
        assert self._process.stdout is not None
        line = await asyncio.wait_for(self._process.stdout.readline(), within)
        if not line:
            raise RuntimeError(f"{self.name} exited (code {self._process.returncode})")
        return orjson.loads(line)

    async def stop(self) -> None:
        """Closes its stdin (the end of its commands), then kills it if it has not exited within 5 s."""
        process = self._process
        if process.returncode is not None:
            return
        if process.stdin is not None:
            process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), 5)
        except TimeoutError:
            process.kill()
            await asyncio.wait_for(process.wait(), 5)


async def commands() -> AsyncIterator[dict[str, Any]]:
    """In the child: the commands read from stdin, until EOF."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=LINE_LIMIT)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        yield orjson.loads(line)


def answer(message: dict[str, Any]) -> None:
    """In the child: one answer on stdout."""
    sys.stdout.buffer.write(orjson.dumps(message, option=orjson.OPT_NON_STR_KEYS) + b"\n")
    sys.stdout.buffer.flush()
