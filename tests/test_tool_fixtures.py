"""Conformance: the recorded exchanges in which the model calls an injected tool (an MCP server named
"coder" offering ``coder_list_workspaces``, here the test server over stdio)."""

from __future__ import annotations

import httpx2
import orjson
import pytest

from tests.fixtures import CHAT_FIXTURES, as_reply, needs_fixtures, read_txtar, sse_events

pytestmark = needs_fixtures

TOOL = "bmcp_coder_coder_list_workspaces"
STREAMING = [
    "single_injected_tool",
    "streaming_injected_tool_no_preamble",
    "streaming_injected_tool_nonzero_index",
]


def content_of(events: list[bytes]) -> str:
    text = []
    for event in events:
        parsed = orjson.loads(event)
        for choice in parsed.get("choices") or []:
            text.append(choice.get("delta", {}).get("content") or "")
    return "".join(text)


def total_tokens(events: list[bytes]) -> int:
    return sum((orjson.loads(e).get("usage") or {}).get("total_tokens", 0) for e in events if e != b"[DONE]")


def upstream_tool_call(events: list[bytes]) -> tuple[str, str]:
    """The id and the arguments of the tool call the upstream streamed."""
    call_id, arguments = "", ""
    for event in events:
        for choice in orjson.loads(event).get("choices") or []:
            for call in choice.get("delta", {}).get("tool_calls") or []:
                call_id = call.get("id") or call_id
                arguments += (call.get("function") or {}).get("arguments") or ""
    return call_id, arguments


@pytest.mark.parametrize("name", STREAMING)
def test_streaming_injected_tool_fixture(tool_gateway, upstream, name):
    sections = read_txtar(CHAT_FIXTURES / f"{name}.txtar")
    first, second = sse_events(sections["streaming"]), sse_events(sections["streaming/tool-call"])
    model, scenario = upstream.scenario(
        as_reply(sections["streaming"], "text/event-stream"),
        as_reply(sections["streaming/tool-call"], "text/event-stream"),
    )
    request = {
        **orjson.loads(sections["request"]),
        "model": model,
        "stream": True,
        "stream_options": {"include_usage": True},  # the cumulative usage chunk, relayed once at the end
    }
    response = httpx2.post(f"{tool_gateway.base_url}/chat/completions", json=request, timeout=30)
    assert response.status_code == 200
    relayed = sse_events(response.content)
    assert relayed[-1] == b"[DONE]"
    assert TOOL.encode() not in response.content
    assert content_of(relayed[:-1]) == content_of(first[:-1]) + content_of(second[:-1])
    usages = [orjson.loads(e)["usage"] for e in relayed[:-1] if orjson.loads(e).get("usage")]
    assert usages[-1]["total_tokens"] == total_tokens(first) + total_tokens(second)

    assert len(scenario.received) == 2
    call_id, arguments = upstream_tool_call(first[:-1])
    *_, assistant, tool_result = scenario.received[1].body["messages"]
    assert assistant["tool_calls"] == [
        {"id": call_id, "type": "function", "function": {"name": TOOL, "arguments": arguments}}
    ]
    assert tool_result["tool_call_id"] == call_id
    assert orjson.loads(tool_result["content"])["structuredContent"]["workspaces"][0]["id"] == "ws-1"
    assert TOOL in [t["function"]["name"] for t in scenario.received[0].body["tools"]]


def test_blocking_injected_tool_fixture(tool_gateway, upstream):
    sections = read_txtar(CHAT_FIXTURES / "single_injected_tool.txtar")
    model, scenario = upstream.scenario(
        as_reply(sections["non-streaming"], "application/json"),
        as_reply(sections["non-streaming/tool-call"], "application/json"),
    )
    request = {**orjson.loads(sections["request"]), "model": model}
    response = httpx2.post(f"{tool_gateway.base_url}/chat/completions", json=request, timeout=30)
    assert response.status_code == 200
    first, final = orjson.loads(sections["non-streaming"]), orjson.loads(sections["non-streaming/tool-call"])
    body = response.json()
    assert body["id"] == response.headers["X-AIBridge-Interception-Id"]
    assert body["choices"] == final["choices"]
    assert body["usage"]["total_tokens"] == first["usage"]["total_tokens"] + final["usage"]["total_tokens"]
    assert body["usage"]["prompt_tokens_details"]["cached_tokens"] == 4864
    messages = scenario.received[1].body["messages"]
    assert messages[-2]["tool_calls"][0]["id"] == "call_aEuQAWKQYInC6fQ4z0iatdVP"
    assert messages[-1]["tool_call_id"] == "call_aEuQAWKQYInC6fQ4z0iatdVP"
