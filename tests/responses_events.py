"""OpenAI Responses events as the tests read them: an event's data, the gateway tool a recorded case calls."""

from __future__ import annotations

import orjson

from tests.anthropic_events import sse


def data_of(lines: bytes) -> dict | None:
    data = b"\n".join(line[6:] for line in lines.split(b"\n") if line.startswith(b"data: "))
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return None


def injected_name(first_answer: bytes) -> str:
    """The gateway tool a recorded first round (blocking or streamed) calls: the case's MCP tool."""
    if first_answer.lstrip().startswith(b"{"):
        items = orjson.loads(first_answer)["output"]
    else:
        items = [data.get("item") or {} for event in sse(first_answer) if (data := data_of(event.lines))]
    return next(item["name"] for item in items if item.get("type") == "function_call")
