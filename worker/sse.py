"""Server-sent events read off an upstream response, a network read at a time, as whole events."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from aiohttp import StreamReader

from shared.upstream import UpstreamCut
from worker.codec import SseEvent

StreamEnd = Callable[[SseEvent], bool]
"""Whether an event is its API family's end of stream (chat completions: ``[DONE]``)."""


async def iter_sse_batches(content: StreamReader, is_end: StreamEnd) -> AsyncIterator[list[SseEvent]]:
    """The events completed by each read: one list per read that completes any, the last ending with the
    stream's end event (``is_end``). A body that ends before that event raises UpstreamCut: an upstream that
    stops early has not answered in full.

    Handing over whatever one read completed, rather than one event at a time, lets a busy worker relay a
    burst of events as one stream entry."""
    pending = b""
    async for received in content.iter_any():
        pending += received
        if b"\r" in pending:
            pending = _normalize_line_ends(pending)
        *complete, pending = pending.split(b"\n\n")
        if batch := [event for block in complete if (event := _event(block)) is not None]:
            for index, event in enumerate(batch):
                if is_end(event):
                    yield batch[: index + 1]
                    return
            yield batch
    if (event := _event(pending.rstrip(b"\r\n"))) is not None:  # the last event, its blank line left out
        if is_end(event):
            yield [event]
            return
        if pending.endswith((b"\n", b"\r")):  # whole lines: an event (an error, say), not a fragment
            yield [event]
    raise UpstreamCut(
        502,
        "the upstream's stream ended before its end marker: the answer is incomplete",
        "upstream_truncated",
    )


def _normalize_line_ends(text: bytes) -> bytes:
    """CRLF and CR line ends as LF; a CR at the very end is kept, as its LF may still be on its way."""
    held = b"\r" if text.endswith(b"\r") else b""
    body = text[:-1] if held else text
    return body.replace(b"\r\n", b"\n").replace(b"\r", b"\n") + held


def _event(block: bytes) -> SseEvent | None:
    """One event's lines read: None if it has no ``data:`` line (a comment, say: nothing to dispatch).
    Its ``id:`` lines are dropped (the API numbers the events it relays)."""
    if block.startswith(b"data: ") and b"\n" not in block:  # the common event, read without a split
        return SseEvent(None, block[6:], block)
    lines = block.split(b"\n")
    name = None
    values = []
    kept = []
    for line in lines:
        if line.startswith(b"data:"):
            value = line[5:]
            values.append(value[1:] if value.startswith(b" ") else value)
        elif line.startswith(b"event:"):
            value = line[6:]
            name = (value[1:] if value.startswith(b" ") else value).decode("utf-8", "replace")
        elif line.startswith(b"id:") or line == b"id":
            continue
        kept.append(line)
    if not values:
        return None
    return SseEvent(name, b"\n".join(values), b"\n".join(kept) if len(kept) < len(lines) else block)
