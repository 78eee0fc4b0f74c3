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
        start,
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "ping"},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}},
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn"},
            "usage": {"output_tokens": output_tokens},
        },
        {"type": "message_stop"},
    ]
    return as_sse(frames)


def tool_use_events(name: str, arguments: dict) -> bytes:
    """A streamed assistant turn that says a word, then calls tool ``name``, its input in two deltas."""
    partial = orjson.dumps(arguments).decode()
    half = len(partial) // 2
    frames = [
        {
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
        },
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Looking."}},
        {"type": "content_block_stop", "index": 0},
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {"type": "tool_use", "id": "toolu_up_1", "name": name, "input": {}},
        },
        *(
            {
                "type": "content_block_delta",
                "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": piece},
            }
            for piece in (partial[:half], partial[half:])
        ),
        {"type": "content_block_stop", "index": 1},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 9}},
        {"type": "message_stop"},
    ]
    return as_sse(frames)


def as_sse(frames: list[dict]) -> bytes:
    """Anthropic's SSE: each frame an event named by its type."""
    return b"".join(
        b"event: %s\ndata: %s\n\n" % (frame["type"].encode(), orjson.dumps(frame)) for frame in frames
    )
