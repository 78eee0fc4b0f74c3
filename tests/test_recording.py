"""What the worker records for each interception, read back through the API's /api/v1 routes, against
SQLite and (when one is reachable) PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import httpx2
import pytest

from tests.fake_upstream import RawReply, SSEReply, completion_body, text_stream, tool_call_stream

HI = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "how many tokens?"}]
USAGE = {
    "prompt_tokens": 100,
    "completion_tokens": 7,
    "total_tokens": 107,
    "prompt_tokens_details": {"cached_tokens": 40, "audio_tokens": 2},
    "completion_tokens_details": {"reasoning_tokens": 3, "audio_tokens": 0, "accepted_prediction_tokens": 1},
}
EXTRA = {
    "prompt_audio": 2,
    "prompt_cached": 40,
    "completion_accepted_prediction": 1,
    "completion_rejected_prediction": 0,
    "completion_audio": 0,
    "completion_reasoning": 3,
}


def recorded(gateway, interception_id: str, ended: bool = True, timeout: float = 10) -> dict:
    """The interception as the API reports it, once the worker's records have reached the database."""
    deadline = time.monotonic() + timeout
    while True:
        response = httpx2.get(f"{gateway.url}/api/v1/interceptions/{interception_id}", timeout=5)
        if response.status_code == 200 and (not ended or response.json().get("ended_at")):
            return response.json()
        if time.monotonic() > deadline:
            pytest.fail(
                f"interception {interception_id} not recorded: {response.status_code} {response.text}"
            )
        time.sleep(0.1)


def stream(gateway, model: str, **extra) -> httpx2.Response:
    body = {"model": model, "messages": HI, "stream": True, **extra}
    headers = {"User-Agent": "recording-test/1.0"}
    return httpx2.post(f"{gateway.base_url}/chat/completions", json=body, headers=headers, timeout=60)


def interception_id(response: httpx2.Response) -> str:
    return response.headers["X-AIBridge-Interception-Id"]


def test_a_plain_stream_records_interception_prompt_and_token_usage(recording_gateway, upstream):
    model, _ = upstream.scenario(SSEReply(text_stream(["fine"], usage=USAGE)))
    response = stream(recording_gateway, model)
    record = recorded(recording_gateway, interception_id(response))
    assert record["provider"] == "openai"
    assert record["family"] == "openai_chat"
    assert record["model"] == model
    assert record["streaming"] is True
    assert record["user_agent"] == "recording-test/1.0"
    assert record["outcome"] == "ok"
    assert record["started_at"] <= record["ended_at"]
    assert [p["prompt"] for p in record["prompts"]] == ["how many tokens?"]
    assert record["prompts"][0]["msg_id"] == "chatcmpl-upstream"
    (usage,) = record["token_usages"]
    assert (usage["msg_id"], usage["input_tokens"], usage["output_tokens"], usage["cache_read_tokens"]) == (
        "chatcmpl-upstream",
        60,
        7,
        40,
    )
    assert usage["extra"] == EXTRA
    assert record["tool_usages"] == []


def test_an_injected_tool_loop_records_each_round_and_the_call(recording_gateway, upstream):
    round_usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    model, _ = upstream.scenario(
        SSEReply(tool_call_stream("bmcp_test_add", '{"a": 1, "b": 2}', usage=round_usage)),
        SSEReply(text_stream(["3"], usage={**round_usage, "prompt_tokens": 30, "total_tokens": 35})),
    )
    response = stream(recording_gateway, model, stream_options={"include_usage": True})
    assert b'"total_tokens":50' in response.content  # cumulative usage relayed
    record = recorded(recording_gateway, interception_id(response))
    assert [(u["input_tokens"], u["output_tokens"]) for u in record["token_usages"]] == [(10, 5), (30, 5)]
    (tool,) = record["tool_usages"]
    assert tool["tool"] == "add"
    assert tool["injected"] is True
    assert tool["args"] == {"a": 1, "b": 2}
    assert tool["server_url"] == json.loads(recording_gateway.env["AIBRIDGE_MCP_SERVERS"])[0]["url"]
    assert tool["tool_call_id"] == "call_1"
    assert tool["invocation_error"] is None


def test_a_client_tool_call_is_recorded_as_not_injected(recording_gateway, upstream):
    model, _ = upstream.scenario(SSEReply(tool_call_stream("read_file", '{"path": "a.txt"}')))
    record = recorded(recording_gateway, interception_id(stream(recording_gateway, model)))
    (tool,) = record["tool_usages"]
    assert (tool["tool"], tool["injected"], tool["server_url"], tool["args"]) == (
        "read_file",
        False,
        None,
        {"path": "a.txt"},
    )


def test_a_failing_tool_records_its_invocation_error(recording_gateway, upstream):
    model, _ = upstream.scenario(
        SSEReply(tool_call_stream("bmcp_test_fail", '{"message": "no such ticket"}')),
        SSEReply(text_stream(["sorry"])),
    )
    record = recorded(recording_gateway, interception_id(stream(recording_gateway, model)))
    (tool,) = record["tool_usages"]
    assert tool["tool"] == "fail"
    assert "no such ticket" in tool["invocation_error"]
    assert record["outcome"] == "ok"


def test_an_upstream_error_ends_the_interception_with_that_outcome(recording_gateway, upstream):
    model, _ = upstream.scenario(
        RawReply(429, b'{"error": {"message": "slow down", "type": "x", "code": "y"}}')
    )
    response = stream(recording_gateway, model)
    assert response.status_code == 429
    record = recorded(recording_gateway, interception_id(response))
    assert record["outcome"] == "upstream_error"
    assert record["token_usages"] == []


def test_a_blocking_request_is_recorded(recording_gateway, upstream):
    model, _ = upstream.scenario(RawReply(200, completion_body("ok", usage=USAGE, cid="chatcmpl-blk")))
    body = {"model": model, "messages": HI}
    response = httpx2.post(f"{recording_gateway.base_url}/chat/completions", json=body, timeout=30)
    record = recorded(recording_gateway, interception_id(response))
    assert record["streaming"] is False
    assert [(u["msg_id"], u["input_tokens"], u["cache_read_tokens"]) for u in record["token_usages"]] == [
        ("chatcmpl-blk", 60, 40)
    ]


def test_listing_filters_and_usage_totals(recording_gateway, upstream):
    model, _ = upstream.scenario(SSEReply(text_stream(["x"], usage=USAGE)))
    ids = [interception_id(stream(recording_gateway, model)) for _ in range(3)]
    for one in ids:
        recorded(recording_gateway, one)
    listed = httpx2.get(
        f"{recording_gateway.url}/api/v1/interceptions", params={"model": model, "limit": 2}
    ).json()
    assert len(listed["data"]) == 2 and listed["next_cursor"]
    rest = httpx2.get(
        f"{recording_gateway.url}/api/v1/interceptions",
        params={"model": model, "limit": 2, "cursor": listed["next_cursor"]},
    ).json()
    assert sorted(i["id"] for i in listed["data"] + rest["data"]) == sorted(ids)
    usage = httpx2.get(f"{recording_gateway.url}/api/v1/usage", params={"by": "model"}).json()["data"]
    (mine,) = [row for row in usage if row["model"] == model]
    assert (mine["input_tokens"], mine["output_tokens"], mine["interceptions"]) == (180, 21, 3)


def test_a_database_outage_does_not_touch_the_stream_and_records_arrive_after(
    recording_gateway, recording_database, upstream
):
    with recording_database.outage():
        model, _ = upstream.scenario(SSEReply(text_stream(["still", " fine"], usage=USAGE)))
        response = stream(recording_gateway, model)
        assert response.status_code == 200
        assert b"still" in response.content and response.content.endswith(b"data: [DONE]\n\n")
        time.sleep(2)  # the worker tries to write meanwhile, and fails
    record = recorded(recording_gateway, interception_id(response), timeout=30)
    assert record["outcome"] == "ok"
    assert len(record["token_usages"]) == 1


def test_a_client_that_leaves_is_recorded_as_gone(recording_gateway, upstream):
    model, _ = upstream.scenario(SSEReply(text_stream(["tick"] * 100), delay=0.05))
    body = {"model": model, "messages": HI, "stream": True}
    with httpx2.stream(
        "POST", f"{recording_gateway.base_url}/chat/completions", json=body, timeout=30
    ) as response:
        for line in response.iter_lines():
            if "tick" in line:
                break
        leaving = interception_id(response)
    assert recorded(recording_gateway, leaving)["outcome"] == "client_gone"


def test_records_carry_family_and_provider_and_more_cached_than_prompt_tokens_is_input_0(
    recording_gateway, recording_database, upstream
):
    over_cached = {
        "prompt_tokens": 10,
        "completion_tokens": 3,
        "prompt_tokens_details": {"cached_tokens": 25},
    }
    model, _ = upstream.scenario(SSEReply(text_stream(["cached"], usage=over_cached)))
    response = stream(recording_gateway, model)
    assert response.status_code == 200 and "cached" in response.text
    record = recorded(recording_gateway, interception_id(response))
    assert (record["family"], record["provider"], record["outcome"]) == ("openai_chat", "openai", "ok")
    (usage,) = record["token_usages"]
    assert (usage["input_tokens"], usage["cache_read_tokens"], usage["cache_write_tokens"]) == (0, 25, 0)

    by_provider = subprocess.run(
        [sys.executable, "-m", "shared.cli", "usage", "--since", "1h", "--by", "provider"],
        env={**os.environ, "AIBRIDGE_DATABASE_URL": recording_database.url},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert by_provider.returncode == 0, by_provider.stderr
    rows = httpx2.get(
        f"{recording_gateway.url}/api/v1/usage", params={"by": "provider", "since": "1h"}, timeout=5
    ).json()["data"]
    (openai,) = rows  # the module's interceptions so far, all through the one provider
    assert openai["provider"] == "openai" and openai["interceptions"] >= 1
    lines = by_provider.stdout.splitlines()
    assert lines[0].endswith("by provider")
    assert lines[2].split() == [
        *("PROVIDER", "INTERCEPTIONS", "INPUT", "OUTPUT", "CACHE", "READ", "CACHE", "WRITE")
    ]
    numbers = ("interceptions", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")
    assert lines[3].split() == ["openai", *(f"{openai[key]:,}" for key in numbers)]
