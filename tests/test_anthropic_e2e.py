"""Anthropic Messages end to end: the recorded exchanges replayed through real API and worker processes, the
official ``anthropic`` SDK as the client, and the MCP tool loop against a real MCP server."""

from __future__ import annotations

import anthropic
import httpx2
import orjson
import pytest

from tests.anthropic_upstream import events, message_events, sse_reply, tool_use_events
from tests.fake_upstream import RawReply
from tests.fixtures import ANTHROPIC_FIXTURES, as_reply, needs_anthropic_fixtures, read_txtar

INJECTED = "bmcp_coder_coder_list_workspaces"


def client(gateway) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=f"{gateway.url}/anthropic", api_key="unused", max_retries=0)


def stream_hi(gateway, model: str) -> httpx2.Response:
    body = {"model": model, "max_tokens": 8, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    return httpx2.post(f"{gateway.url}/anthropic/v1/messages", json=body, timeout=30)


def test_sdk_stream_and_create_through_the_gateway(gateway, upstream):
    streamed = message_events("Hello from the stream", input_tokens=12, output_tokens=7)
    blocking = {
        "id": "msg_up_2",
        "type": "message",
        "role": "assistant",
        "model": "claude-test",
        "content": [{"type": "text", "text": "Hello, blocking"}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 3, "output_tokens": 4},
    }
    model, scenario = upstream.scenario(sse_reply(streamed), RawReply(200, orjson.dumps(blocking)))
    sdk = client(gateway)
    messages = [{"role": "user", "content": "hi"}]
    pinned = {"anthropic-version": "2023-06-01"}
    with sdk.messages.stream(model=model, max_tokens=64, messages=messages, extra_headers=pinned) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Hello from the stream"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (12, 7)
    created = sdk.messages.with_raw_response.create(
        model=model, max_tokens=64, messages=messages, extra_headers={"anthropic-beta": "test-beta-1"}
    )
    message = created.parse()
    assert message.content[0].text == "Hello, blocking"
    assert message.id == created.headers["x-aibridge-interception-id"]
    first, second = scenario.received
    assert first.body["stream"] is True and "stream" not in second.body
    assert first.headers["x-api-key"] == "sk-ant-upstream-test-key"
    assert first.headers["anthropic-version"] == "2023-06-01"
    assert second.headers["anthropic-beta"] == "test-beta-1"


def test_upstream_errors_reach_the_sdk_as_its_exception_types(gateway, upstream):
    limited = b'{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}'
    overloaded = b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
    model, _ = upstream.scenario(
        RawReply(429, limited, headers={"Content-Type": "application/json", "retry-after": "7"}),
        RawReply(529, overloaded),
    )
    sdk = client(gateway)
    with pytest.raises(anthropic.RateLimitError) as limited_error:
        sdk.messages.create(model=model, max_tokens=8, messages=[{"role": "user", "content": "hi"}])
    assert limited_error.value.response.headers["retry-after"] == "7"
    assert limited_error.value.body == orjson.loads(limited)
    with pytest.raises(anthropic.APIStatusError) as overloaded_error:
        sdk.messages.create(
            model=model, max_tokens=8, messages=[{"role": "user", "content": "hi"}], stream=True
        )
    assert overloaded_error.value.status_code == 529


def test_an_error_event_mid_stream_ends_the_stream_with_it(gateway, upstream):
    cut = message_events("partial").split(b"event: content_block_stop")[0]
    error = (
        b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n'
    )
    model, _ = upstream.scenario(sse_reply(cut + error))
    response = stream_hi(gateway, model)
    assert response.status_code == 200
    seen = events(response.content)
    assert seen[-1] == ("error", orjson.loads(error.split(b"data: ")[1]))
    assert "message_stop" not in [name for name, _ in seen]


def test_a_cut_stream_ends_with_an_anthropic_error_event(gateway, upstream):
    cut = message_events("partial").split(b"event: message_stop")[0]
    model, _ = upstream.scenario(sse_reply(cut))
    response = stream_hi(gateway, model)
    name, body = events(response.content)[-1]
    assert name == "error"
    assert body["type"] == "error" and body["error"]["type"] == "api_error"
    assert "before its end marker" in body["error"]["message"]


@needs_anthropic_fixtures
@pytest.mark.parametrize("name", ["simple", "single_builtin_tool", "multi_thinking_builtin_tool"])
def test_recorded_streams_are_relayed_event_for_event(gateway, upstream, name):
    sections = read_txtar(ANTHROPIC_FIXTURES / f"{name}.txtar")
    model, scenario = upstream.scenario(as_reply(sections["streaming"], "text/event-stream"))
    request = {**orjson.loads(sections["request"]), "model": model, "stream": True}
    response = httpx2.post(f"{gateway.url}/anthropic/v1/messages", json=request, timeout=30)
    assert response.status_code == 200
    sent, seen = events(sections["streaming"]), events(response.content)
    assert [name for name, _ in seen] == [name for name, _ in sent]
    interception = response.headers["x-aibridge-interception-id"]
    assert seen[0][1]["message"]["id"] == interception
    assert seen[1:] == sent[1:]
    assert scenario.received[0].body["messages"] == request["messages"]


@needs_anthropic_fixtures
@pytest.mark.parametrize("name", ["simple", "single_builtin_tool"])
def test_recorded_blocking_answers_keep_their_content(gateway, upstream, name):
    sections = read_txtar(ANTHROPIC_FIXTURES / f"{name}.txtar")
    model, _ = upstream.scenario(as_reply(sections["non-streaming"], "application/json"))
    request = {**orjson.loads(sections["request"]), "model": model}
    response = httpx2.post(f"{gateway.url}/anthropic/v1/messages", json=request, timeout=30)
    assert response.status_code == 200
    answer, recorded = response.json(), orjson.loads(sections["non-streaming"])
    assert answer["id"] == response.headers["x-aibridge-interception-id"]
    assert {**answer, "id": recorded["id"]} == recorded


@needs_anthropic_fixtures
@pytest.mark.parametrize("streaming", [True, False])
def test_a_recorded_error_before_the_stream_keeps_its_status_and_body(gateway, upstream, streaming):
    sections = read_txtar(ANTHROPIC_FIXTURES / "non_stream_error.txtar")
    recorded = as_reply(sections["streaming" if streaming else "non-streaming"], "application/json")
    model, _ = upstream.scenario(recorded)
    request = {**orjson.loads(sections["request"]), "model": model, "stream": streaming}
    response = httpx2.post(f"{gateway.url}/anthropic/v1/messages", json=request, timeout=30)
    assert (response.status_code, response.content) == (recorded.status, recorded.body)


@needs_anthropic_fixtures
def test_a_recorded_error_event_ends_the_stream(gateway, upstream):
    sections = read_txtar(ANTHROPIC_FIXTURES / "stream_error.txtar")
    model, _ = upstream.scenario(as_reply(sections["streaming"], "text/event-stream"))
    request = {**orjson.loads(sections["request"]), "model": model, "stream": True}
    response = httpx2.post(f"{gateway.url}/anthropic/v1/messages", json=request, timeout=30)
    assert response.status_code == 200
    assert events(response.content)[-1] == events(sections["streaming"])[-1]


@needs_anthropic_fixtures
@pytest.mark.parametrize("streaming", [True, False])
def test_injected_tool_loop_over_two_rounds(tool_gateway, upstream, streaming):
    sections = read_txtar(ANTHROPIC_FIXTURES / "single_injected_tool.txtar")
    kind = "streaming" if streaming else "non-streaming"
    content_type = "text/event-stream" if streaming else "application/json"
    model, scenario = upstream.scenario(
        as_reply(sections[kind], content_type), as_reply(sections[f"{kind}/tool-call"], content_type)
    )
    request = {**orjson.loads(sections["request"]), "model": model, "stream": streaming}
    response = httpx2.post(f"{tool_gateway.url}/anthropic/v1/messages", json=request, timeout=60)
    assert response.status_code == 200
    assert INJECTED.encode() not in response.content
    assert len(scenario.received) == 2
    assert INJECTED in [tool["name"] for tool in scenario.received[0].body["tools"]]
    *_, assistant, results = scenario.received[1].body["messages"]
    assert assistant["role"] == "assistant"
    (call,) = [block for block in assistant["content"] if block["type"] == "tool_use"]
    assert call["name"] == INJECTED
    (result,) = results["content"]
    assert result["type"] == "tool_result" and result["tool_use_id"] == call["id"]
    if streaming:
        seen = events(response.content)
        assert [name for name, _ in seen].count("message_start") == 1
        assert seen[-1][0] == "message_stop"
        indices = [data["index"] for name, data in seen if name == "content_block_start"]
        assert indices == list(range(len(indices)))
    else:
        assert response.json()["id"] == response.headers["x-aibridge-interception-id"]


def test_the_sdk_stream_outlives_a_12_second_tool_call_and_sums_the_usage(tool_gateway, upstream):
    """During an injected tool call nothing comes from the upstream: the client gets the stream's headers
    and a ``: ping`` comment line every keep-alive interval, which the SDK's parser skips."""
    model, scenario = upstream.scenario(
        sse_reply(tool_use_events("bmcp_test_slow", {"seconds": 12})),
        sse_reply(message_events("Done waiting", input_tokens=30, output_tokens=6)),
    )
    sdk = client(tool_gateway)
    with sdk.messages.stream(
        model=model, max_tokens=64, messages=[{"role": "user", "content": "wait"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Looking.Done waiting"  # the tool round's preamble, then the answer
    assert [block.type for block in final.content] == ["text", "text"]
    assert (final.usage.input_tokens, final.usage.output_tokens) == (20 + 30, 9 + 6)
    (result,) = scenario.received[1].body["messages"][-1]["content"]
    assert result["tool_use_id"] == "toolu_up_1" and not result.get("is_error")


def test_an_anthropic_stream_resumes_after_any_event_with_its_event_lines(gateway, upstream):
    model, _ = upstream.scenario(sse_reply(message_events("resumable")))
    first = stream_hi(gateway, model)
    resumed = gateway.resume("/anthropic/v1/messages", first, 2)
    assert resumed.status_code == 200
    assert events(resumed.content) == events(first.content)[3:]
    assert b"event: message_stop\n" in resumed.content
