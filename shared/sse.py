"""Server-sent event framing shared by the worker, which frames the events it relays, and the API, which adds
each event's ``id`` and sends them."""

from __future__ import annotations

EVENT_SEPARATOR = b"\n\n"


def data_field(payload: bytes) -> bytes:
    """``payload`` as the ``data:`` lines of one event, without the line end of the last one."""
    if b"\n" not in payload:
        return b"data: " + payload
    return b"\n".join(b"data: " + line for line in payload.split(b"\n"))
