"""The Anthropic Messages codec on hand-written events, no process: a two-round tool loop with thinking, a
client tool, an error event, a mixed round, request bodies and error shapes."""

from __future__ import annotations

import orjson
import pytest

from shared.families import Family, error_body, normalize_error
from shared.token_counts import TokenCounts
from shared.upstream import UpstreamFailure
from tests.anthropic_events import (
    ANSWER_ROUND,
    INTERCEPTION_ID,
    MCP_RESULT,
    PING_EVENT,
    READ,
    REQUEST,
    TOOL_ROUND,
    WORKSPACES,
    client_view,
    codec_for,
    end,
    event,
    start,
    stream_rounds,
    text,
    tool_use,
)
from worker.codec import SseEvent, ToolCall, ToolResult


def test_two_round_tool_loop_with_thinking():
    codec = codec_for(REQUEST, streaming=True)
    relayed, rounds, requests = stream_rounds(codec, [TOOL_ROUND, ANSWER_ROUND])
    view = client_view(relayed)
    assert [(d["type"], d.get("index")) for d in view if d["type"] == "content_block_start"] == [
        ("content_block_start", 0),
        ("content_block_start", 1),
        ("content_block_start", 2),
        ("content_block_start", 3),  # the answer's text, its upstream index 0
    ]
    assert [d["type"] for d in view if d["type"].startswith("message_")] == [
        "message_start",
        "message_delta",
        "message_stop",
    ]
    assert view.count({"type": "ping"}) == 2
    assert view[-2]["delta"]["stop_reason"] == "end_turn"
    assert view[-2]["usage"] == {
        "output_tokens": 27,
        "input_tokens": 40,
        "cache_creation_input_tokens": 3,
        "cache_read_input_tokens": 5,
    }
    renumbered = relayed[-4]  # the answer's text delta: only its index changed
    assert renumbered == ANSWER_ROUND[3].lines.replace(b'"index":0', b'"index":3')
    assert rounds[0].thoughts == ["Their workspaces first."]
    assert rounds[0].usage == TokenCounts(input=10, output=20, cache_read=5, cache_write=3)
    assert rounds[1].usage == TokenCounts(input=30, output=7)
    assert rounds[0].injected_calls() == [ToolCall("toolu_1", WORKSPACES.injected_name, '{"owner": "admin"}')]
    assert requests[1]["messages"][1:] == [
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "Their workspaces first.", "signature": "c2lnbmF0dXJl"},
                {"type": "redacted_thinking", "data": "ZW5jcnlwdGVk"},
                {"type": "text", "text": "Let me look."},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": WORKSPACES.injected_name,
                    "input": {"owner": "admin"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_1",
                    "content": MCP_RESULT["content"],
                    "is_error": False,
                }
            ],
        },
    ]


def test_failed_tool_call_goes_back_as_an_error_result():
    codec = codec_for(REQUEST, streaming=True)
    call = ToolCall("toolu_1", WORKSPACES.injected_name, '{"owner": "admin"}')
    failure = ToolResult(call, {"error": True, "message": "timed out"}, "timed out")
    _, _, requests = stream_rounds(codec, [TOOL_ROUND, ANSWER_ROUND], results=[failure])
    assert requests[1]["messages"][-1]["content"] == [
        {
            "type": "tool_result",
            "tool_use_id": "toolu_1",
            "content": [{"type": "text", "text": "timed out"}],
            "is_error": True,
        }
    ]


def test_client_tool_is_relayed_and_reported():
    answer = [
        start("msg_1", input_tokens=10, output_tokens=1),
        *text(0, "Reading."),
        *tool_use(1, "toolu_r", "Read", '{"file_path": "/tmp/foo"}'),
        *end("tool_use", output_tokens=9),
    ]
    codec = codec_for(REQUEST, streaming=True)
    relayed, rounds, _ = stream_rounds(codec, [answer])
    assert relayed[1:] == [e.lines for e in answer[1:]]
    assert rounds[0].injected_calls() == []
    assert rounds[0].client_calls() == [ToolCall("toolu_r", "Read", '{"file_path": "/tmp/foo"}')]
    client_view(relayed)


def test_error_event_raises_with_its_body():
    codec = codec_for(REQUEST, streaming=True)
    current = codec.new_round()
    current.take(start("msg_1", input_tokens=1))
    overloaded = event(
        "error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    )
    with pytest.raises(UpstreamFailure) as failure:
        current.take(overloaded)
    assert (failure.value.status, failure.value.body) == (529, overloaded.data)
    with pytest.raises(UpstreamFailure) as failure:
        current.take(
            SseEvent("content_block_delta", b"{not json", b"event: content_block_delta\ndata: {not json")
        )
    assert failure.value.status == 502
    assert orjson.loads(failure.value.body)["error"]["type"] == "api_error"


def test_mixed_round_runs_the_gateway_tool_and_hands_the_client_tool_back_to_the_model():
    mixed = [
        start("msg_1", input_tokens=10, output_tokens=1),
        *text(0, "Both."),
        *tool_use(1, "toolu_r", "Read", '{"file_path": "/tmp/foo"}'),
        *tool_use(2, "toolu_w", WORKSPACES.injected_name, "{}"),
        *end("tool_use", output_tokens=15),
    ]
    client_round = [
        start("msg_2", input_tokens=40, output_tokens=1),
        *tool_use(0, "toolu_r2", "Read", '{"file_path": "/tmp/foo"}'),
        *end("tool_use", output_tokens=6),
    ]
    codec = codec_for(REQUEST, streaming=True)
    relayed, rounds, requests = stream_rounds(codec, [mixed, client_round])
    view = client_view(relayed)
    tool_blocks = [d["content_block"] for d in view if d["type"] == "content_block_start"]
    assert [b["type"] for b in tool_blocks] == ["text", "tool_use"]
    assert tool_blocks[1]["id"] == "toolu_r2"  # the first Read never reached the client: no double run
    assert rounds[0].client_calls() == []
    assert rounds[1].client_calls() == [ToolCall("toolu_r2", "Read", '{"file_path": "/tmp/foo"}')]
    assert view[-2]["usage"]["output_tokens"] == 21
    assistant, results = requests[1]["messages"][-2:]
    assert [b["id"] for b in assistant["content"] if b["type"] == "tool_use"] == ["toolu_r", "toolu_w"]
    assert [(r["tool_use_id"], r["is_error"]) for r in results["content"]] == [
        ("toolu_w", False),
        ("toolu_r", True),
    ]


def test_mixed_round_that_ends_the_interception_relays_its_client_tool():
    codec = codec_for(REQUEST, streaming=True)
    current = codec.new_round()
    relayed = []
    for upstream_event in [
        start("msg_1", input_tokens=10, output_tokens=1),
        *tool_use(0, "toolu_r", "Read", "{}"),
        *tool_use(1, "toolu_w", WORKSPACES.injected_name, "{}"),
        *end("tool_use", output_tokens=15),
    ]:
        relayed += current.take(upstream_event)
    assert len(relayed) == 1  # message_start only, so far
    relayed += current.closing_events()
    view = client_view(relayed)
    assert [d["type"] for d in view][-2:] == ["message_delta", "message_stop"]
    assert [d["content_block"]["id"] for d in view if d["type"] == "content_block_start"] == ["toolu_r"]


def test_request_body():
    codec = codec_for({**REQUEST, "stream": True}, streaming=False)
    blocking = codec.request_body(streaming=False)
    assert "stream" not in blocking
    assert blocking["tools"] == [
        {
            "name": WORKSPACES.injected_name,
            "description": "List the workspaces",
            "input_schema": WORKSPACES.input_schema,
        },
        READ,
    ]
    assert codec_for(REQUEST, streaming=True, tools=[]).request_body(streaming=True) == {
        **REQUEST,
        "stream": True,
    }


def test_is_stream_end():
    codec = codec_for(REQUEST, streaming=True)
    assert codec.is_stream_end(end("end_turn")[1])
    assert codec.is_stream_end(SseEvent(None, b'{"type":"message_stop"}', b'data: {"type":"message_stop"}'))
    assert not codec.is_stream_end(end("end_turn")[0])
    assert not codec.is_stream_end(PING_EVENT)


def test_error_bodies():
    """The one definition of Anthropic's error shape (shared/families.py), as the codec's failures use it."""
    anthropic = Family.ANTHROPIC_MESSAGES
    anthropic_shaped = (
        b'{"type":"error","error":{"type":"rate_limit_error","message":"slow down"},"request_id":"r1"}'
    )
    assert normalize_error(anthropic, 429, anthropic_shaped) == anthropic_shaped
    openai_shaped = b'{"error":{"message":"bad key","type":"invalid_request_error","code":"invalid_api_key"}}'
    assert orjson.loads(normalize_error(anthropic, 401, openai_shaped)) == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "bad key"},
    }
    assert orjson.loads(normalize_error(anthropic, 529, b"busy")) == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "upstream answered 529: busy"},
    }
    assert orjson.loads(normalize_error(anthropic, 503, b""))["error"]["type"] == "overloaded_error"
    assert orjson.loads(normalize_error(anthropic, 403, b"<html>"))["error"]["type"] == "permission_error"
    kinds = {
        400: "invalid_request_error",
        401: "authentication_error",
        404: "not_found_error",
        413: "request_too_large",
        429: "rate_limit_error",
        500: "api_error",
        503: "overloaded_error",
        504: "timeout_error",
    }
    for status, kind in kinds.items():
        body = orjson.loads(error_body(anthropic, status, "it failed", "server_error", "some_code"))
        assert body == {"type": "error", "error": {"type": kind, "message": "it failed"}}, status


def test_blocking_two_rounds_with_thinking():
    first = {
        "id": "msg_1",
        "type": "message",
        "content": [
            {"type": "thinking", "thinking": "Look it up.", "signature": "c2ln"},
            {
                "type": "tool_use",
                "id": "toolu_1",
                "name": WORKSPACES.injected_name,
                "input": {"owner": "admin"},
            },
        ],
        "stop_reason": "tool_use",
        "usage": {
            "input_tokens": 10,
            "cache_creation_input_tokens": 2,
            "cache_read_input_tokens": 0,
            "output_tokens": 5,
        },
    }
    second = {**first, "id": "msg_2", "content": [{"type": "text", "text": "bob"}], "stop_reason": "end_turn"}
    second["usage"] = {
        "input_tokens": 20,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 2,
        "output_tokens": 3,
    }
    codec = codec_for(REQUEST, streaming=False)
    one = codec.new_round()
    one.take_body(orjson.dumps(first))
    assert one.thoughts == ["Look it up."]
    codec.continue_after(one, [ToolResult(one.injected_calls()[0], MCP_RESULT, None)])
    assert codec.request_body(streaming=False)["messages"][1]["content"] == [
        {"type": "thinking", "thinking": "Look it up.", "signature": "c2ln"},
        {"type": "tool_use", "id": "toolu_1", "name": WORKSPACES.injected_name, "input": {"owner": "admin"}},
    ]
    two = codec.new_round()
    two.take_body(orjson.dumps(second))
    final = orjson.loads(codec.final_body(two))
    assert final["id"] == INTERCEPTION_ID
    assert final["content"] == second["content"]
    assert final["usage"] == {
        "input_tokens": 30,
        "cache_creation_input_tokens": 2,
        "cache_read_input_tokens": 2,
        "output_tokens": 8,
    }
    with pytest.raises(UpstreamFailure) as failure:
        codec.new_round().take_body(b'{"id": "msg_3"}')
    assert failure.value.status == 502
