"""A real Codex CLI session (``codex exec --json``) through the gateway's ``/openai/v1/responses``: the model
is the fake upstream, scripted by model name with Responses streams. Skipped when no ``codex`` binary is found
(tests/codex_cli.py says where it looks) or while the gateway has no Responses family."""

from __future__ import annotations

import orjson
import pytest

from shared.families import Family
from tests.agents import assert_one_injected_call, find_agent
from tests.codex_cli import CodexRun, function_call_stream, responses_stream, run_codex
from tests.test_claude_code import recorded_interceptions

INJECTED = "bmcp_coder_coder_list_workspaces"
ANSWER = "Your workspaces are dev and ci."
CODEX, MISSING = find_agent("codex", "@openai/codex", "AIBRIDGE_TEST_CODEX")
pytestmark = [
    pytest.mark.skipif(
        "OPENAI_RESPONSES" not in Family.__members__,
        reason="the gateway has no /openai/v1/responses route yet",
    ),
    pytest.mark.skipif(CODEX is None, reason=MISSING),
]


def codex_session(gateway, model: str, tmp_path) -> CodexRun:
    """``codex exec`` through ``gateway``, once it exited 0 with an answer (else its output and the logs)."""
    run = run_codex(CODEX, gateway.base_url, model, tmp_path, "List my Coder workspaces.")
    assert run.returncode == 0, (
        f"stderr:\n{run.stderr[-3000:]}\nstdout:\n{run.stdout[-3000:]}\n{gateway.logs()}"
    )
    return run


def assert_codex_headers(received: dict[str, str]) -> None:
    """What the upstream got: the gateway's own key, never the client's, and Codex's own headers."""
    headers = {name.lower(): value for name, value in received.items()}
    assert headers["authorization"] == "Bearer sk-upstream-test-key"
    assert headers["user-agent"].startswith("codex_exec/")
    assert headers["originator"] == "codex_exec"


def test_a_codex_session_through_the_gateway(gateway, upstream, tmp_path):
    model, scenario = upstream.scenario(responses_stream(ANSWER))
    run = codex_session(gateway, model, tmp_path)
    assert run.answer() == ANSWER
    (completed,) = [event for event in run.events if event["type"] == "turn.completed"]
    assert (completed["usage"]["input_tokens"], completed["usage"]["output_tokens"]) == (11, 7)

    (received,) = scenario.received
    assert received.path == "/v1/responses"
    assert_codex_headers(received.headers)
    assert "sk-client-unused" not in " ".join(received.headers.values())
    body = received.body
    assert (body["stream"], body["store"], body["include"]) == (True, False, ["reasoning.encrypted_content"])
    assert {"exec_command", "web_search"} <= {tool.get("name", tool["type"]) for tool in body["tools"]}

    (record,) = recorded_interceptions(gateway, model, 1)
    assert (record["family"], record["provider"], record["outcome"]) == (
        Family["OPENAI_RESPONSES"].value,
        "openai",
        "ok",
    )
    assert record["user_agent"].startswith("codex_exec/")
    assert (record["client"], record["session_id"]) == ("codex", received.headers["session-id"])
    assert (run.events[0]["type"], run.events[0]["thread_id"]) == ("thread.started", record["session_id"])


def test_a_codex_session_runs_an_injected_mcp_tool_through_the_gateway(tool_gateway, upstream, tmp_path):
    model, scenario = upstream.scenario(
        function_call_stream(INJECTED, {"owner": "admin"}), responses_stream(ANSWER, response_id="resp_up_2")
    )
    run = codex_session(tool_gateway, model, tmp_path)
    assert run.answer() == ANSWER
    assert INJECTED not in run.stdout
    assert "unsupported call" not in run.stderr  # Codex never saw the injected call

    first, second = scenario.received  # the gateway's two rounds; Codex made one request
    offered = {tool.get("name", tool["type"]) for tool in first.body["tools"]}
    assert {"exec_command", "web_search"} <= offered  # Codex's own tools, relayed
    assert {INJECTED, "bmcp_test_echo"} <= offered
    *_, call, output = second.body["input"]
    assert (call["type"], call["name"], orjson.loads(call["arguments"])) == (
        "function_call",
        INJECTED,
        {"owner": "admin"},
    )
    assert (output["type"], output["call_id"]) == ("function_call_output", call["call_id"])
    assert "ws-1" in str(output["output"]) and "admin" in str(
        output["output"]
    )  # the real MCP server's answer
    for received in (first, second):
        assert_codex_headers(received.headers)

    (record,) = recorded_interceptions(tool_gateway, model, 1)
    assert_one_injected_call(record, "coder_list_workspaces", {"owner": "admin"})
