"""Server-sent events read off an upstream response, a network read at a time."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import StreamReader


async def iter_sse_batches(content: StreamReader) -> AsyncIterator[list[bytes]]:
    """The ``data`` of each event completed by a read, as raw bytes: one list per read that completes any.

    Handing over whatever one read completed, rather than one event at a time, lets a busy worker relay a
    burst of chunks as one stream entry."""
    pending = b""
    async for received in content.iter_any():
        pending += received
        if b"\r" in pending:
            pending = _normalize_line_ends(pending)
        *complete, pending = pending.split(b"\n\n")
        if batch := [data for block in complete if (data := _event_data(block)) is not None]:
            yield batch
    if (data := _event_data(pending.rstrip(b"\r\n"))) is not None:
        yield [data]


def _normalize_line_ends(text: bytes) -> bytes:
    """CRLF and CR line ends as LF; a CR at the very end is kept, as its LF may still be on its way."""
    held = b"\r" if text.endswith(b"\r") else b""
    body = text[:-1] if held else text
    return body.replace(b"\r\n", b"\n").replace(b"\r", b"\n") + held


def _event_data(block: bytes) -> bytes | None:
    """The ``data`` of one event's lines (several ``data:`` lines joined by LF); None if it has none.
    Comments (``:``), ``event:``, ``id:`` and ``retry:`` lines carry nothing the relay needs."""
    if block.startswith(b"data: ") and b"\n" not in block:
        return block[6:]
    values = [line[5:] for line in block.split(b"\n") if line.startswith(b"data:")]
    if not values:
        return None
    return b"\n".join(value[1:] if value.startswith(b" ") else value for value in values)
