"""The answers of ``bench.fake_upstream``, pre-encoded: streamed ones as the HTTP/1.1 chunked writes that go out
one per content chunk (chat completions, Anthropic Messages, OpenAI Responses), whole ones as complete
responses."""

from __future__ import annotations

import functools
from typing import Any

import orjson

CHUNK_ID = "chatcmpl-bench"
MESSAGE_ID = "msg_bench"
RESPONSE_ID = "resp_bench"
OUTPUT_ITEM_ID = "msg_bench_output"
MODEL = "bench-model"
CREATED = 1753357673
CHUNK_TEXT = "tok "
PROMPT_TOKENS = 12
TOOL_PREFIX = "bmcp_"
TOOL_ARGUMENTS = '{"text": "bench"}'

SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)
LAST_CHUNK = b"0\r\n\r\n"


def _event(body: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(body) + b"\n\n"


def _named_event(body: dict[str, Any]) -> bytes:
    return b"event: " + body["type"].encode() + b"\n" + _event(body)


def _framed_writes(first: bytes, chunks: list[bytes], last: bytes) -> tuple[bytes, ...]:
    """One framed write per content chunk: the first also carries the events before the content (``first``),
    the last the events after it (``last``) and the end of the chunked body."""
    events = list(chunks)
    events[0] = first + events[0]
    events[-1] += last
    writes = [b"%x\r\n%b\r\n" % (len(event), event) for event in events]
    writes[-1] += LAST_CHUNK
    return tuple(writes)


def _chunk(delta: dict[str, Any] | None, usage: dict[str, int] | None = None) -> dict[str, Any]:
    return {
        "id": CHUNK_ID,
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": MODEL,
        "system_fingerprint": None,
        "choices": []
        if delta is None
        else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}],
        "usage": usage,
    }


def _usage(chunks: int) -> dict[str, int]:
    return {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": chunks,
        "total_tokens": PROMPT_TOKENS + chunks,
    }


def _chat_writes(bodies: list[dict[str, Any]], usage: dict[str, int]) -> tuple[bytes, ...]:
    """The chunks' events; the last also carries the usage chunk and ``[DONE]``."""
    last = _event(_chunk(None, usage)) + b"data: [DONE]\n\n"
    return _framed_writes(b"", [_event(body) for body in bodies], last)


@functools.lru_cache(maxsize=64)
def stream_writes(chunks: int) -> tuple[bytes, ...]:
    """The writes of one streamed chat completion of ``chunks`` content chunks."""
    bodies = []
    for index in range(chunks):
        delta: dict[str, Any] = {"content": CHUNK_TEXT}
        if index == 0:
            delta = {"role": "assistant", "content": CHUNK_TEXT, "refusal": None}
        body = _chunk(delta)
        if index == chunks - 1:
            body["choices"][0]["finish_reason"] = "stop"
        bodies.append(body)
    return _chat_writes(bodies, _usage(chunks))


@functools.lru_cache(maxsize=16)
def tool_call_writes(tool: str) -> tuple[bytes, ...]:
    """The writes of an answer that calls ``tool``: name, arguments, finish_reason tool_calls."""
    call = {"index": 0, "id": "call_bench", "type": "function", "function": {"name": tool, "arguments": ""}}
    bodies = [
        _chunk({"role": "assistant", "content": None, "tool_calls": [call]}),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": TOOL_ARGUMENTS}}]}),
        _chunk({}),
    ]
    bodies[-1]["choices"][0]["finish_reason"] = "tool_calls"
    return _chat_writes(bodies, _usage(len(bodies)))


@functools.lru_cache(maxsize=64)
def completion_response(chunks: int) -> bytes:
    message = {"role": "assistant", "content": CHUNK_TEXT * chunks, "refusal": None}
    body = {
        "id": CHUNK_ID,
        "object": "chat.completion",
        "created": CREATED,
        "model": MODEL,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}],
        "usage": _usage(chunks),
    }
    return json_response(200, orjson.dumps(body))


def _message(content: list[dict[str, Any]], stop_reason: str | None, output_tokens: int) -> dict[str, Any]:
    return {
        "id": MESSAGE_ID,
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {
            "input_tokens": PROMPT_TOKENS,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": output_tokens,
        },
    }


@functools.lru_cache(maxsize=64)
def messages_stream_writes(chunks: int) -> tuple[bytes, ...]:
    """The writes of one streamed Anthropic message of ``chunks`` text deltas: the message's and the block's
    start and a ping before the first, the block's and the message's end after the last."""
    delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": CHUNK_TEXT}}
    before = [
        {"type": "message_start", "message": _message([], None, 1)},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "ping"},
    ]
    after = [
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": chunks},
        },
        {"type": "message_stop"},
    ]
    first, last = (b"".join(map(_named_event, bodies)) for bodies in (before, after))
    return _framed_writes(first, [_named_event(delta)] * chunks, last)


@functools.lru_cache(maxsize=64)
def message_response(chunks: int) -> bytes:
    return json_response(
        200, orjson.dumps(_message([{"type": "text", "text": CHUNK_TEXT * chunks}], "end_turn", chunks))
    )


def _output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}


def _output_message(text: str | None) -> dict[str, Any]:
    """The answer's output item: in progress and empty (``text`` None), or completed with its text."""
    return {
        "id": OUTPUT_ITEM_ID,
        "type": "message",
        "status": "in_progress" if text is None else "completed",
        "role": "assistant",
        "content": [] if text is None else [_output_text(text)],
    }


def _response(chunks: int | None) -> dict[str, Any]:
    """The Responses ``response`` object: in progress (``chunks`` None), or completed with its output and
    usage."""
    done = chunks is not None
    return {
        "id": RESPONSE_ID,
        "object": "response",
        "created_at": CREATED,
        "status": "completed" if done else "in_progress",
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "max_output_tokens": None,
        "model": MODEL,
        "output": [_output_message(CHUNK_TEXT * chunks)] if done else [],
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "store": False,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": {
            "input_tokens": PROMPT_TOKENS,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": chunks,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": PROMPT_TOKENS + chunks,
        }
        if done
        else None,
        "metadata": {},
    }


@functools.lru_cache(maxsize=64)
def responses_stream_writes(chunks: int) -> tuple[bytes, ...]:
    """The writes of one streamed OpenAI response of ``chunks`` ``response.output_text.delta`` events:
    ``response.created``, ``response.in_progress``, ``response.output_item.added`` and
    ``response.content_part.added`` before the first, the text's, the part's and the item's ``...done`` and
    ``response.completed`` (with usage) after the last; every event numbered (``sequence_number``)."""
    text = CHUNK_TEXT * chunks
    place = {"item_id": OUTPUT_ITEM_ID, "output_index": 0, "content_index": 0}
    before = [
        {"type": "response.created", "response": _response(None)},
        {"type": "response.in_progress", "response": _response(None)},
        {"type": "response.output_item.added", "output_index": 0, "item": _output_message(None)},
        {"type": "response.content_part.added", **place, "part": _output_text("")},
    ]
    delta = {"type": "response.output_text.delta", **place, "delta": CHUNK_TEXT, "logprobs": []}
    after = [
        {"type": "response.output_text.done", **place, "text": text, "logprobs": []},
        {"type": "response.content_part.done", **place, "part": _output_text(text)},
        {"type": "response.output_item.done", "output_index": 0, "item": _output_message(text)},
        {"type": "response.completed", "response": _response(chunks)},
    ]
    bodies = [*before, *[delta] * chunks, *after]
    events = [_named_event({**body, "sequence_number": number}) for number, body in enumerate(bodies)]
    first, last = b"".join(events[: len(before)]), b"".join(events[len(before) + chunks :])
    return _framed_writes(first, events[len(before) : len(before) + chunks], last)


@functools.lru_cache(maxsize=64)
def response_response(chunks: int) -> bytes:
    return json_response(200, orjson.dumps(_response(chunks)))


def json_response(status: int, body: bytes) -> bytes:
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 411: "Length Required"}[status]
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


MODELS_RESPONSE = json_response(
    200,
    orjson.dumps(
        {
            "object": "list",
            "data": [{"id": MODEL, "object": "model", "created": CREATED, "owned_by": "bench"}],
        }
    ),
)


def error_response(status: int, message: str) -> bytes:
    error = {"error": {"message": message, "type": "invalid_request_error", "code": None}}
    return json_response(status, orjson.dumps(error))


def offered_tool(body: dict[str, Any]) -> str | None:
    """The first injected (``bmcp_``) function the request offers, unless its conversation already has a
    tool result."""
    messages = body.get("messages")
    if isinstance(messages, list) and any(isinstance(m, dict) and m.get("role") == "tool" for m in messages):
        return None
    for tool in body.get("tools") or ():
        name = tool.get("function", {}).get("name", "") if isinstance(tool, dict) else ""
        if isinstance(name, str) and name.startswith(TOOL_PREFIX):
            return name
    return None
