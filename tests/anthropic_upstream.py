"""Anthropic Messages upstream answers as the fake upstream sends them, and the events a client reads."""

from __future__ import annotations

import orjson

from tests.fake_upstream import RawReply


def events(raw: bytes) -> list[tuple[str, dict]]:
    """The (event name, data) pairs of an SSE body."""
    found = []
    for block in raw.replace(b"\r\n", b"\n").split(b"\n\n"):
        lines = block.split(b"\n")
        name = next((line[7:].decode() for line in lines if line.startswith(b"event: ")), None)
        data = b"\n".join(line[6:] for line in lines if line.startswith(b"data: "))
        if data:
            found.append((name, orjson.loads(data)))
    return found


def sse_reply(text: bytes) -> RawReply:
    return RawReply(200, text, headers={"Content-Type": "text/event-stream"})


def message_events(text: str, *, input_tokens: int = 10, output_tokens: int = 5) -> bytes:
    start = {
        "type": "message_start",
        "message": {
            "id": "msg_up_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-test",
            "content": [],
            "stop_reason": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": 1},
        },
    }
    frames = [
        ("message_start", start),
        (
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        ),
        ("ping", {"type": "ping"}),
        (
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}},
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn"},
                "usage": {"output_tokens": output_tokens},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    return b"".join(b"event: %s\ndata: %s\n\n" % (name.encode(), orjson.dumps(data)) for name, data in frames)


def tool_use_events(name: str, arguments: dict) -> bytes:
    """A round whose answer is one call of the tool ``name``."""
    start = {
        "type": "message_start",
        "message": {
            "id": "msg_up_tool",
            "type": "message",
            "role": "assistant",
            "model": "claude-test",
            "content": [],
            "stop_reason": None,
            "usage": {"input_tokens": 20, "output_tokens": 1},
        },
    }
    block = {"type": "tool_use", "id": "toolu_1", "name": name, "input": {}}
    partial = {"type": "input_json_delta", "partial_json": orjson.dumps(arguments).decode()}
    frames = [
        ("message_start", start),
        ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": block}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": partial}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "message_delta",
            {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 9}},
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    return b"".join(b"event: %s\ndata: %s\n\n" % (name.encode(), orjson.dumps(data)) for name, data in frames)
