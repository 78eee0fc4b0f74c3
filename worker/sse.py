"""Server-sent events read off an upstream response, a network read at a time."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from aiohttp import StreamReader

from shared.errors import error_body
from shared.upstream import UpstreamCut

StreamEnd = Callable[[bytes], bool]
"""Whether an event's data is its API family's end of stream (chat completions: ``[DONE]``)."""


async def iter_sse_batches(content: StreamReader, is_end: StreamEnd) -> AsyncIterator[list[bytes]]:
    """The ``data`` of each event completed by a read, as raw bytes: one list per read that completes any,
    the last ending with the stream's end event (``is_end``). A body that ends before that event raises
    UpstreamCut: an upstream that stops early has not answered in full.

    Handing over whatever one read completed, rather than one event at a time, lets a busy worker relay a
    burst of chunks as one stream entry."""
    pending = b""
    async for received in content.iter_any():
        pending += received
        if b"\r" in pending:
            pending = _normalize_line_ends(pending)
        *complete, pending = pending.split(b"\n\n")
        if batch := [data for block in complete if (data := _event_data(block)) is not None]:
            for index, data in enumerate(batch):
                if is_end(data):
                    yield batch[: index + 1]
                    return
            yield batch
    if (data := _event_data(pending.rstrip(b"\r\n"))) is not None:  # the last event, its blank line left out
        if is_end(data):
            yield [data]
            return
        if pending.endswith((b"\n", b"\r")):  # whole lines: an event (an error, say), not a fragment
            yield [data]
    raise UpstreamCut(
        502,
        error_body(
            "the upstream's stream ended before its end marker: the answer is incomplete",
            "upstream_error",
            "upstream_truncated",
        ),
    )


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
