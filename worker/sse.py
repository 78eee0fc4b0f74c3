"""Server-sent events read off an upstream response, yielding each event's ``data`` as raw bytes."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import StreamReader


async def iter_sse_data(content: StreamReader) -> AsyncIterator[bytes]:
    data_lines: list[bytes] = []
    async for raw_line in content:
        line = raw_line.rstrip(b"\r\n")
        if not line:
            if data_lines:
                yield b"\n".join(data_lines)
                data_lines = []
            continue
        if line.startswith(b"data:"):
            value = line[5:]
            data_lines.append(value[1:] if value.startswith(b" ") else value)
        # comments (":"), "event:", "id:" and "retry:" lines carry nothing the relay needs
    if data_lines:
        yield b"\n".join(data_lines)
