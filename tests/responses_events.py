"""OpenAI Responses events as the tests read them: an event's data, the gateway tool a recorded case calls."""

from __future__ import annotations

import orjson

from tests.anthropic_events import sse
from worker.codec import SseEvent


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


def event(payload: dict) -> SseEvent:
    data = orjson.dumps(payload)
    return SseEvent(payload["type"], data, b"event: " + payload["type"].encode() + b"\ndata: " + data)


def response_events(response_id: str, items: list[dict], start: int, usage: dict) -> list[SseEvent]:
    opened = {"id": response_id, "object": "response", "status": "in_progress", "output": []}
    frames = [
        {"type": "response.created", "response": opened},
        {"type": "response.in_progress", "response": opened},
    ]
    for index, item in enumerate(items):
        frames.append({"type": "response.output_item.added", "output_index": index, "item": item})
        if item["type"] == "function_call":
            delta = {"type": "response.function_call_arguments.delta", "output_index": index, "delta": "{}"}
            frames.append({**delta, "item_id": item["id"]})
        frames.append({"type": "response.output_item.done", "output_index": index, "item": item})
    done = {**opened, "status": "completed", "output": items, "usage": usage}
    frames.append({"type": "response.completed", "response": done})
    return [event({**frame, "sequence_number": start + n}) for n, frame in enumerate(frames)]


USAGE = {
    "input_tokens": 100,
    "input_tokens_details": {"cached_tokens": 40},
    "output_tokens": 10,
    "output_tokens_details": {"reasoning_tokens": 4},
    "total_tokens": 110,
}
TEXT = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "content": [{"type": "output_text", "text": "ok", "annotations": []}],
}
REASONING = {
    "id": "rs_1",
    "type": "reasoning",
    "summary": [{"type": "summary_text", "text": "think"}],
    "encrypted_content": "enc",
}


def call(name: str, call_id: str = "call_1") -> dict:
    return {
        "id": "fc_" + call_id,
        "type": "function_call",
        "call_id": call_id,
        "name": name,
        "arguments": "{}",
    }


def as_sse(events: list[SseEvent]) -> bytes:
    return b"".join(event.lines + b"\n\n" for event in events)
