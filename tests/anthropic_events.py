"""Anthropic Messages events for the codec's tests: read from recorded SSE or built by hand, driven through the
codec as the tool loop drives it, and the client's view of them checked to be well formed."""

from __future__ import annotations

import orjson

from shared.families import Family
from shared.job import InterceptionJob
from shared.mcp.tools import McpTool
from tests.codec_driver import stream_rounds as drive
from worker.codec import SseEvent
from worker.families.anthropic_messages import AnthropicMessagesCodec

INTERCEPTION_ID = "7f1e0c52-0000-4000-8000-000000000001"
WORKSPACES = McpTool(
    server="coder",
    server_url="http://mcp.test/mcp",
    name="coder_list_workspaces",
    injected_name="bmcp_coder_coder_list_workspaces",
    description="List the workspaces",
    input_schema={"type": "object", "properties": {"owner": {"type": "string"}}},
)
PING = b'event: ping\ndata: {"type": "ping"}'
MCP_RESULT = {"content": [{"type": "text", "text": "workspace bob: dd711d5c"}]}


def sse(raw: bytes) -> list[SseEvent]:
    """Events as the worker's reader hands them over: name, data, lines (no blank line)."""
    events = []
    for block in raw.strip().split(b"\n\n"):
        lines = block.strip(b"\n")
        name = next((line[7:].decode() for line in lines.split(b"\n") if line.startswith(b"event: ")), None)
        data = b"\n".join(line[6:] for line in lines.split(b"\n") if line.startswith(b"data: "))
        events.append(SseEvent(name, data, lines))
    return events


def event(name: str, payload: dict) -> SseEvent:
    data = orjson.dumps(payload)
    return SseEvent(name, data, b"event: " + name.encode() + b"\ndata: " + data)


def codec_for(body: dict, streaming: bool, tools: list[McpTool] | None = None):
    job = InterceptionJob(
        interception_id=INTERCEPTION_ID,
        family=Family.ANTHROPIC_MESSAGES,
        provider="anthropic",
        body=body,
        streaming=streaming,
        enqueued_at=0.0,
    )
    return AnthropicMessagesCodec(job, [WORKSPACES] if tools is None else tools)


def stream_rounds(codec, answers: list[list[SseEvent]], results=None):
    """Drive the codec as the loop does, injected calls answered with MCP_RESULT (tests/codec_driver.py)."""
    return drive(codec, answers, MCP_RESULT, results)


def client_view(relayed: list[bytes]) -> list[dict]:
    """The client's events, checked to be well formed: event line = data type, one message_start, block
    indices contiguous from 0 and each used while its block is open."""
    parsed = []
    open_blocks: set[int] = set()
    next_index = 0
    for lines in relayed:
        name_line, data_line = lines.split(b"\n", 1)
        data = orjson.loads(data_line.removeprefix(b"data: "))
        assert name_line == b"event: " + data["type"].encode()
        if data["type"] == "content_block_start":
            assert data["index"] == next_index
            open_blocks.add(next_index)
            next_index += 1
        elif data["type"] in ("content_block_delta", "content_block_stop"):
            assert data["index"] in open_blocks
            if data["type"] == "content_block_stop":
                open_blocks.remove(data["index"])
        parsed.append(data)
    assert [data["type"] for data in parsed].count("message_start") == 1
    assert parsed[0]["type"] == "message_start" and parsed[0]["message"]["id"] == INTERCEPTION_ID
    assert not open_blocks
    return parsed


READ = {"name": "Read", "description": "Read a file", "input_schema": {"type": "object"}}
REQUEST = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 1024,
    "tools": [READ],
    "messages": [{"role": "user", "content": "hi"}],
}


def start(message_id: str, **usage: int) -> SseEvent:
    message = {"id": message_id, "type": "message", "role": "assistant", "content": [], "usage": usage}
    return event("message_start", {"type": "message_start", "message": message})


def block(index: int, content: dict, *deltas: dict) -> list[SseEvent]:
    return [
        event(
            "content_block_start", {"type": "content_block_start", "index": index, "content_block": content}
        ),
        *(
            event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d})
            for d in deltas
        ),
        event("content_block_stop", {"type": "content_block_stop", "index": index}),
    ]


def text(index: int, words: str) -> list[SseEvent]:
    return block(index, {"type": "text", "text": ""}, {"type": "text_delta", "text": words})


def tool_use(index: int, call_id: str, name: str, arguments: str) -> list[SseEvent]:
    content = {"type": "tool_use", "id": call_id, "name": name, "input": {}}
    return block(index, content, {"type": "input_json_delta", "partial_json": arguments})


def end(stop_reason: str, **usage: int) -> list[SseEvent]:
    delta = {
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": None},
        "usage": usage,
    }
    return [event("message_delta", delta), event("message_stop", {"type": "message_stop"})]


PING_EVENT = SseEvent("ping", b'{"type": "ping"}', PING)
THINKING = block(
    0,
    {"type": "thinking", "thinking": ""},
    {"type": "thinking_delta", "thinking": "Their workspaces first."},
    {"type": "signature_delta", "signature": "c2lnbmF0dXJl"},
)
REDACTED = block(1, {"type": "redacted_thinking", "data": "ZW5jcnlwdGVk"})
TOOL_ROUND = [
    start(
        "msg_1", input_tokens=10, cache_creation_input_tokens=3, cache_read_input_tokens=5, output_tokens=1
    ),
    *THINKING,
    *REDACTED,
    *text(2, "Let me look."),
    PING_EVENT,
    *tool_use(3, "toolu_1", WORKSPACES.injected_name, '{"owner": "admin"}'),
    *end("tool_use", output_tokens=20),
]
ANSWER_ROUND = [
    start(
        "msg_2", input_tokens=30, cache_creation_input_tokens=0, cache_read_input_tokens=0, output_tokens=1
    ),
    PING_EVENT,
    *text(0, "You have bob."),
    *end("end_turn", output_tokens=7),
]
