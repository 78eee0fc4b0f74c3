"""A real Claude Code session (``claude -p``) through the gateway, with an MCP server configured: the model
(the fake upstream, scripted by model name) first calls an injected MCP tool, then answers in text. Skipped
when no ``claude`` binary is found: AIBRIDGE_TEST_CLAUDE (``.ci/run`` installs one there), the usual install
folders, or ``claude`` on PATH."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import httpx2
import orjson
import pytest

from tests.agents import assert_one_injected_call, find_agent
from tests.anthropic_upstream import message_events, sse_reply, tool_use_events

INJECTED = "bmcp_coder_coder_list_workspaces"
ANSWER = "Your workspaces are dev and ci."


CLAUDE, MISSING = find_agent("claude", "@anthropic-ai/claude-code", "AIBRIDGE_TEST_CLAUDE")
pytestmark = pytest.mark.skipif(CLAUDE is None, reason=MISSING)


def run_claude(
    gateway, model: str, small_model: str, home: Path, **credentials: str
) -> subprocess.CompletedProcess[str]:
    """``claude -p`` pointed at ``gateway``, its key ``credentials`` (ANTHROPIC_API_KEY by default)."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "ANTHROPIC_BASE_URL": f"{gateway.url}/anthropic",
        "ANTHROPIC_SMALL_FAST_MODEL": small_model,
        "ANTHROPIC_DEFAULT_HAIKU_MODEL": small_model,
        "DISABLE_TELEMETRY": "1",
        "DISABLE_AUTOUPDATER": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        **(credentials or {"ANTHROPIC_API_KEY": "sk-ant-client-unused"}),  # any key: auth is off by default
    }
    command = [CLAUDE, "-p", "List my Coder workspaces.", "--output-format", "stream-json", "--verbose"]
    return subprocess.run(
        [*command, "--model", model],
        env=env,
        cwd=home,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=180,
    )


def session_output(done: subprocess.CompletedProcess[str], gateway) -> list[dict]:
    """Claude Code's stream-json lines, once it exited 0 (else its output and the gateway's logs)."""
    assert done.returncode == 0, (
        f"stderr:\n{done.stderr[-3000:]}\nstdout:\n{done.stdout[-3000:]}\n{gateway.logs()}"
    )
    return [orjson.loads(line) for line in done.stdout.splitlines() if line.strip()]


def assert_answered(output: list[dict], answer: str, done: subprocess.CompletedProcess[str], gateway) -> None:
    (result,) = [line for line in output if line["type"] == "result"]
    outcome = (result["subtype"], result["is_error"], result["result"])
    assert outcome == ("success", False, answer), f"{done.stdout[-3000:]}\n{gateway.logs()}"


def assert_claude_code_headers(received: dict[str, str]) -> None:
    """What the upstream got: the gateway's own key, no client credential, Claude Code's own headers."""
    headers = {name.lower(): value for name, value in received.items()}
    assert headers["x-api-key"] == "sk-ant-upstream-test-key"
    assert "authorization" not in headers
    assert headers["anthropic-version"] == "2023-06-01"
    assert "claude-code-" in headers["anthropic-beta"]
    assert headers["user-agent"].startswith("claude-cli/")


def recorded_interceptions(
    gateway, model: str, count: int, key: str | None = None, timeout: float = 15
) -> list[dict]:
    """The ``count`` ended interceptions of ``model``, with their records, once they are in the database."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    deadline = time.monotonic() + timeout
    while True:
        url = f"{gateway.url}/api/v1/interceptions"
        listed = httpx2.get(url, params={"model": model}, headers=headers, timeout=5).json()
        ids = [item["id"] for item in listed.get("data", [])]
        records = [httpx2.get(f"{url}/{i}", headers=headers, timeout=5).json() for i in ids]
        if len(records) >= count and all(record.get("ended_at") for record in records):
            return records
        if time.monotonic() > deadline:
            pytest.fail(f"{count} interception(s) of {model} not recorded: {listed}")
        time.sleep(0.1)


def test_a_claude_code_session_runs_an_injected_mcp_tool_through_the_gateway(
    tool_gateway, upstream, tmp_path
):
    model, scenario = upstream.scenario(
        sse_reply(tool_use_events(INJECTED, {"owner": "admin"})), sse_reply(message_events(ANSWER))
    )
    small_model, _ = upstream.scenario(sse_reply(message_events("Coder workspaces")))  # titles, quota checks
    done = run_claude(tool_gateway, model, small_model, tmp_path)
    output = session_output(done, tool_gateway)
    assert_answered(output, ANSWER, done, tool_gateway)
    assert INJECTED not in done.stdout
    assert not [line for line in output if line["type"] == "user"]  # no tool result went back from the client

    first, second = scenario.received
    offered = [tool["name"] for tool in first.body["tools"]]
    assert {"Bash", "Read", "Edit"} <= set(offered)  # Claude Code's own tools
    assert {INJECTED, "bmcp_test_echo"} <= set(offered)
    *_, assistant, results = second.body["messages"]
    (call,) = [block for block in assistant["content"] if block["type"] == "tool_use"]
    assert (call["name"], call["input"]) == (INJECTED, {"owner": "admin"})
    (tool_result,) = [block for block in results["content"] if block["type"] == "tool_result"]
    assert tool_result["tool_use_id"] == call["id"]
    answered = orjson.dumps(tool_result["content"]).decode()
    assert "ws-1" in answered and "admin" in answered  # the real MCP server's answer to the call
    for received in (first, second):
        assert_claude_code_headers(received.headers)

    (record,) = recorded_interceptions(tool_gateway, model, 1)
    assert (record["family"], record["provider"], record["outcome"]) == (
        "anthropic_messages",
        "anthropic",
        "ok",
    )
    assert record["user_agent"].startswith("claude-cli/")
    assert record["client"] == "claude-code"
    sessions = {line["session_id"] for line in output if "session_id" in line}
    assert sessions == {record["session_id"]}  # X-Claude-Code-Session-Id is the session Claude Code reports
    assert_one_injected_call(record, "coder_list_workspaces", {"owner": "admin"})


def test_claude_code_with_a_client_key_as_bearer_token(make_gateway, upstream, mcp_http_url, tmp_path):
    """ANTHROPIC_AUTH_TOKEN: Claude Code sends the client key as ``Authorization: Bearer``; the upstream gets
    the gateway's own key, never the client's."""
    servers = orjson.dumps([{"name": "test", "url": mcp_http_url}]).decode()
    gateway = make_gateway(AIBRIDGE_AUTH="keys", AIBRIDGE_MCP_SERVERS=servers)
    key = gateway.create_key("claude-user")
    model, scenario = upstream.scenario(
        sse_reply(tool_use_events("bmcp_test_echo", {"text": "echo-7f3a"})),
        sse_reply(message_events("Echoed.")),
    )
    small_model, _ = upstream.scenario(sse_reply(message_events("Echo")))
    done = run_claude(gateway, model, small_model, tmp_path, ANTHROPIC_AUTH_TOKEN=key)
    assert_answered(session_output(done, gateway), "Echoed.", done, gateway)
    first, second = scenario.received
    assert "echo-7f3a" in orjson.dumps(second.body["messages"][-1]["content"]).decode()
    for received in (first, second):
        assert key not in " ".join(received.headers.values())
        assert_claude_code_headers(received.headers)
    (record,) = recorded_interceptions(gateway, model, 1, key=key)
    assert record["actor_id"] == "claude-user"
    assert [(tool["tool"], tool["injected"]) for tool in record["tool_usages"]] == [("echo", True)]
    assert key not in gateway.output()
