"""Conformance: the tool-free chat-completions exchanges recorded by coder/aibridge, replayed."""

from __future__ import annotations

import httpx2
import openai
import orjson
import pytest

from tests.fixtures import CHAT_FIXTURES, as_reply, needs_fixtures, read_txtar, sse_events

pytestmark = needs_fixtures


def replay(gateway, upstream, name: str, streaming: bool) -> tuple[httpx2.Response, dict, list]:
    sections = read_txtar(CHAT_FIXTURES / f"{name}.txtar")
    section = sections["streaming" if streaming else "non-streaming"]
    reply = as_reply(section, "text/event-stream" if streaming else "application/json")
    model, scenario = upstream.scenario(reply)
    request = orjson.loads(sections["request"])
    request.update(model=model, stream=streaming)
    if streaming:
        request["stream_options"] = {"include_usage": True}  # the fixtures' usage chunk, relayed
    response = httpx2.post(f"{gateway.base_url}/chat/completions", json=request, timeout=15)
    return response, request, scenario.received


def with_id(data: bytes, new_id: str) -> dict:
    return {**orjson.loads(data), "id": new_id}


@pytest.mark.parametrize("name", ["simple", "single_builtin_tool"])
def test_streaming_fixture_is_relayed_chunk_for_chunk(gateway, upstream, name):
    response, request, received = replay(gateway, upstream, name, streaming=True)
    assert response.status_code == 200
    interception_id = response.headers["X-AIBridge-Interception-Id"]
    sent = sse_events(read_txtar(CHAT_FIXTURES / f"{name}.txtar")["streaming"])
    relayed = sse_events(response.content)
    assert len(relayed) == len(sent)
    for upstream_event, relayed_event in zip(sent[:-1], relayed[:-1], strict=True):
        parsed = orjson.loads(upstream_event)
        if parsed.get("usage"):
            assert orjson.loads(relayed_event) == with_id(upstream_event, interception_id)
        else:
            old_id = b'"id":"' + parsed["id"].encode() + b'"'
            assert relayed_event == upstream_event.replace(
                old_id, b'"id":"' + interception_id.encode() + b'"', 1
            )
    assert relayed[-1] == b"[DONE]"
    assert received[0].body == {**request, "n": 1}


def test_streaming_fixture_through_the_sdk(gateway, upstream):
    sections = read_txtar(CHAT_FIXTURES / "simple.txtar")
    model, _ = upstream.scenario(as_reply(sections["streaming"], "text/event-stream"))
    request = orjson.loads(sections["request"])
    stream = gateway.client().chat.completions.create(
        model=model, messages=request["messages"], stream=True, stream_options={"include_usage": True}
    )
    parts = list(stream)
    expected = "".join(
        event["choices"][0]["delta"].get("content") or ""
        for event in map(orjson.loads, sse_events(sections["streaming"])[:-1])
        if event["choices"]
    )
    assert "".join(p.choices[0].delta.content or "" for p in parts if p.choices) == expected
    assert parts[-1].usage.completion_tokens == 238


def test_builtin_tool_call_is_relayed_to_the_client(gateway, upstream):
    sections = read_txtar(CHAT_FIXTURES / "single_builtin_tool.txtar")
    model, _ = upstream.scenario(as_reply(sections["streaming"], "text/event-stream"))
    request = orjson.loads(sections["request"])
    stream = gateway.client().chat.completions.create(
        model=model, messages=request["messages"], tools=request["tools"], stream=True
    )
    calls = [call for part in stream if part.choices for call in (part.choices[0].delta.tool_calls or [])]
    assert calls[0].function.name == "read_file"
    assert "".join(call.function.arguments or "" for call in calls) == '{"path":"README.md"}'


@pytest.mark.parametrize("name", ["simple", "single_builtin_tool"])
def test_blocking_fixture_keeps_the_body_but_the_id(gateway, upstream, name):
    response, _, received = replay(gateway, upstream, name, streaming=False)
    assert response.status_code == 200
    interception_id = response.headers["X-AIBridge-Interception-Id"]
    recorded = read_txtar(CHAT_FIXTURES / f"{name}.txtar")["non-streaming"].strip() + b"\n"
    old_id = orjson.loads(recorded)["id"]
    assert response.content == recorded.replace(
        f'"id": "{old_id}"'.encode(), f'"id":"{interception_id}"'.encode(), 1
    )
    assert received[0].body["stream"] is False


def test_stream_error_fixture_ends_with_the_error_event(gateway, upstream):
    response, _, _ = replay(gateway, upstream, "stream_error", streaming=True)
    assert response.status_code == 200
    events = sse_events(response.content)
    assert len(events) == 5  # four chunks, the error: no [DONE] after it
    assert orjson.loads(events[4])["error"]["message"].startswith("The server had an error")
    assert orjson.loads(events[4])["error"]["type"] == "server_error"

    sections = read_txtar(CHAT_FIXTURES / "stream_error.txtar")
    model, _ = upstream.scenario(as_reply(sections["streaming"], "text/event-stream"))
    with pytest.raises(openai.APIError, match="The server had an error"):
        list(
            gateway.client().chat.completions.create(
                model=model, messages=[{"role": "user", "content": "x"}], stream=True
            )
        )


@pytest.mark.parametrize("streaming", [True, False])
def test_error_before_the_stream_keeps_upstream_status_and_body(gateway, upstream, streaming):
    response, _, _ = replay(gateway, upstream, "non_stream_error", streaming=streaming)
    recorded = read_txtar(CHAT_FIXTURES / "non_stream_error.txtar")[
        "streaming" if streaming else "non-streaming"
    ]
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    assert response.json() == orjson.loads(recorded.partition(b"\n\n")[2])
    assert response.json()["error"]["code"] == "context_length_exceeded"


def test_fallthrough_fixture_models_are_passed_through(gateway, upstream):
    recorded = read_txtar(CHAT_FIXTURES / "fallthrough.txtar")["non-streaming"]
    upstream.models_reply = as_reply(recorded, "application/json")
    models = gateway.client().models.list()
    assert [m.id for m in models.data] == [m["id"] for m in orjson.loads(recorded)["data"]]
    assert upstream.models_requests[-1].headers["Authorization"] == "Bearer sk-upstream-test-key"
