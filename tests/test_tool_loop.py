"""MCP tools injected into chat completions and run by the worker, end to end with real MCP servers:
the test server over streamable HTTP ("test", "filtered") and over stdio ("coder"), and one that is down
(see the ``tool_gateway`` fixture)."""

from __future__ import annotations

import socket
import time

import httpx2
import openai
import orjson
import pytest

from tests.fake_upstream import RawReply, SSEReply, completion_body, text_stream, tool_call_stream

HI = [{"role": "user", "content": "use the tools"}]
ROUND_USAGE = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}


def offered(received) -> list[str]:
    return [tool["function"]["name"] for tool in received.body.get("tools", [])]


def stream_text(gateway, model: str, **kwargs) -> tuple[str, list]:
    parts = list(gateway.client().chat.completions.create(model=model, messages=HI, stream=True, **kwargs))
    text = "".join(p.choices[0].delta.content or "" for p in parts if p.choices)
    return text, parts


def test_tools_of_live_servers_are_injected_with_filters_and_the_clients_own_kept(tool_gateway, upstream):
    model, scenario = upstream.scenario(SSEReply(text_stream(["hi"])))
    client_tool = {"type": "function", "function": {"name": "read_file", "parameters": {"type": "object"}}}
    stream_text(tool_gateway, model, tools=[client_tool])
    names = offered(scenario.received[0])
    assert names[0] == "read_file"
    assert {"bmcp_test_echo", "bmcp_test_add", "bmcp_test_fail", "bmcp_coder_coder_list_workspaces"} <= set(
        names
    )
    assert [n for n in names if n.startswith("bmcp_filtered_")] == [
        "bmcp_filtered_echo",
        "bmcp_filtered_slow",
    ]
    assert not [n for n in names if n.startswith("bmcp_down_")]
    echo = next(t for t in scenario.received[0].body["tools"] if t["function"]["name"] == "bmcp_test_echo")
    assert echo["function"]["strict"] is False
    assert echo["function"]["parameters"]["required"] == ["text"]


@pytest.mark.parametrize("preamble", ["Let me check. ", None])
def test_injected_call_is_run_and_hidden_from_the_client(tool_gateway, upstream, preamble):
    model, scenario = upstream.scenario(
        SSEReply(
            tool_call_stream("bmcp_test_echo", '{"text": "ping"}', preamble=preamble, usage=ROUND_USAGE)
        ),
        SSEReply(text_stream(["The echo said ping."], usage=ROUND_USAGE)),
    )
    text, parts = stream_text(tool_gateway, model, stream_options={"include_usage": True})
    assert text == (preamble or "") + "The echo said ping."
    assert not [p for p in parts if p.choices and p.choices[0].delta.tool_calls]
    assert all(p.choices[0].finish_reason != "tool_calls" for p in parts if p.choices)
    assert parts[-1].usage.total_tokens == 30  # cumulative over both rounds
    second = scenario.received[1].body["messages"]
    assert second[:-2] == HI
    assert second[-2] == {
        "role": "assistant",
        "content": preamble or None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "bmcp_test_echo", "arguments": '{"text": "ping"}'},
            }
        ],
    }
    assert second[-1]["role"] == "tool" and second[-1]["tool_call_id"] == "call_1"
    result = orjson.loads(second[-1]["content"])
    assert result["content"][0]["text"] == "ping"
    assert not result.get("isError")


def test_usage_sent_in_the_withheld_finishing_chunk_still_counts(tool_gateway, upstream):
    model, _ = upstream.scenario(
        SSEReply(
            tool_call_stream("bmcp_test_echo", '{"text": "x"}', usage=ROUND_USAGE, usage_in_finish=True)
        ),
        SSEReply(text_stream(["ok"], usage=ROUND_USAGE)),
    )
    _, parts = stream_text(tool_gateway, model, stream_options={"include_usage": True})
    assert [p.usage.total_tokens for p in parts if p.usage] == [30]


def test_a_tool_call_at_a_nonzero_index_is_run(tool_gateway, upstream):
    model, scenario = upstream.scenario(
        SSEReply(tool_call_stream("bmcp_test_add", '{"a": 2, "b": 3}', index=1, preamble="Adding.")),
        SSEReply(text_stream(["5"])),
    )
    text, _ = stream_text(tool_gateway, model)
    assert text == "Adding.5"
    assistant, tool = scenario.received[1].body["messages"][-2:]
    assert [call["id"] for call in assistant["tool_calls"]] == ["call_1"]
    assert "5" in tool["content"]


def test_two_sequential_injected_calls(tool_gateway, upstream):
    model, scenario = upstream.scenario(
        SSEReply(tool_call_stream("bmcp_test_echo", '{"text": "one"}', call_id="call_a")),
        SSEReply(tool_call_stream("bmcp_coder_coder_list_workspaces", '{"owner": "me"}', call_id="call_b")),
        SSEReply(text_stream(["both done"])),
    )
    text, _ = stream_text(tool_gateway, model)
    assert text == "both done"
    assert len(scenario.received) == 3
    messages = scenario.received[2].body["messages"]
    assert [m.get("tool_call_id") for m in messages if m["role"] == "tool"] == ["call_a", "call_b"]


def test_a_failing_tool_gives_the_model_an_error_result(tool_gateway, upstream):
    model, scenario = upstream.scenario(
        SSEReply(tool_call_stream("bmcp_test_fail", '{"message": "disk on fire"}')),
        SSEReply(text_stream(["sorry"])),
    )
    text, _ = stream_text(tool_gateway, model)
    assert text == "sorry"
    result = orjson.loads(scenario.received[1].body["messages"][-1]["content"])
    assert result["error"] is True
    assert "disk on fire" in result["message"]


def test_a_client_tool_call_is_relayed_unmodified(tool_gateway, upstream):
    model, scenario = upstream.scenario(SSEReply(tool_call_stream("read_file", '{"path": "README.md"}')))
    _, parts = stream_text(tool_gateway, model)
    calls = [c for p in parts if p.choices for c in (p.choices[0].delta.tool_calls or [])]
    assert calls[0].function.name == "read_file"
    assert "".join(c.function.arguments or "" for c in calls) == '{"path": "README.md"}'
    assert parts[-1].choices[0].finish_reason == "tool_calls"
    assert len(scenario.received) == 1


def test_the_round_cap_ends_the_stream_with_an_error_event(tool_gateway, upstream):
    model, scenario = upstream.scenario(SSEReply(tool_call_stream("bmcp_test_echo", '{"text": "again"}')))
    with pytest.raises(openai.APIError) as caught:
        stream_text(tool_gateway, model)
    assert "4 rounds" in caught.value.message
    assert len(scenario.received) == 4


def test_blocking_request_runs_the_loop_and_reports_cumulative_usage(tool_gateway, upstream):
    call = {
        "id": "call_9",
        "type": "function",
        "function": {"name": "bmcp_test_echo", "arguments": '{"text": "b"}'},
    }
    model, scenario = upstream.scenario(
        RawReply(200, completion_body(None, tool_calls=[call], usage=ROUND_USAGE)),
        RawReply(200, completion_body("echoed b", usage=ROUND_USAGE)),
    )
    result = tool_gateway.client().chat.completions.create(model=model, messages=HI)
    assert result.choices[0].message.content == "echoed b"
    assert result.usage.total_tokens == 30
    assert result.usage.prompt_tokens == 20
    tool_message = scenario.received[1].body["messages"][-1]
    assert orjson.loads(tool_message["content"])["content"][0]["text"] == "b"


def read_until(conn: socket.socket, marker: bytes, received: bytes = b"") -> bytes:
    while marker not in received:
        data = conn.recv(65536)
        if not data:
            break
        received += data
    return received


def open_raw_stream(gateway, model: str) -> socket.socket:
    body = orjson.dumps({"model": model, "messages": HI, "stream": True})
    conn = socket.create_connection(("127.0.0.1", gateway.port), timeout=60)
    conn.sendall(
        f"POST /openai/v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    return conn


def test_a_30_second_tool_call_keeps_the_stream_alive_with_pings(tool_gateway, upstream):
    model, _ = upstream.scenario(
        SSEReply(tool_call_stream("bmcp_test_slow", '{"seconds": 30}')),
        SSEReply(text_stream(["awake"])),
    )
    started = time.monotonic()
    with open_raw_stream(tool_gateway, model) as conn:
        head = read_until(conn, b"\r\n\r\n")
        assert b"200 OK" in head and time.monotonic() - started < 5  # headers before the tool runs
        received = read_until(conn, b"data: [DONE]", head)
    assert time.monotonic() - started >= 30
    assert received.count(b": ping\n") >= 30 / 0.5 * 0.8
    assert b"awake" in received and b"error" not in received


def test_a_client_leaving_during_a_tool_call_cancels_it(tool_gateway, upstream, redis_client):
    model, scenario = upstream.scenario(
        SSEReply(tool_call_stream("bmcp_test_slow", '{"seconds": 20}')),
        SSEReply(text_stream(["never"])),
    )
    with open_raw_stream(tool_gateway, model) as conn:
        head = read_until(conn, b"\r\n\r\n")
        interception_id = next(
            line.split(b": ")[1].strip().decode()
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"x-aibridge-interception-id")
        )
        time.sleep(0.5)
    stream_key = f"{tool_gateway.prefix}stream:{interception_id}"
    deadline = time.monotonic() + 3
    while redis_client.pttl(stream_key) > 300_000 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert 0 < redis_client.pttl(stream_key) <= 300_000, "the job did not end when its client left"
    time.sleep(1)
    assert len(scenario.received) == 1  # the loop stopped: no second upstream round


def test_stdio_and_http_servers_both_serve_calls(tool_gateway, upstream):
    model, scenario = upstream.scenario(
        SSEReply(tool_call_stream("bmcp_coder_coder_list_workspaces", "{}")),
        SSEReply(text_stream(["listed"])),
    )
    text, _ = stream_text(tool_gateway, model)
    assert text == "listed"
    result = orjson.loads(scenario.received[1].body["messages"][-1]["content"])
    assert not result.get("error")


def test_readiness_is_unaffected_by_a_server_that_is_down(tool_gateway):
    assert httpx2.get(f"{tool_gateway.url}/readyz").status_code == 200
