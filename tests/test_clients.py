"""Client detection (shared/clients.py): on the headers real programs sent (tests/data/client_headers), on
the user agents other clients publish, and end to end: the official SDKs through the gateway, their records'
client, ``/api/v1/usage`` and ``aibridge usage`` by and of client."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import anthropic
import httpx2
import orjson
import pytest

from shared.clients import MAX_SESSION_ID, RULES, Client, ClientIdentity, detect_client
from tests.fake_upstream import RawReply, completion_body

RECORDED = Path(__file__).parent / "data" / "client_headers"


def recorded_headers(name: str) -> dict[str, str]:
    """The headers of ``name``'s recorded request, their names in lower case (as Starlette gives them)."""
    recorded = json.loads((RECORDED / f"{name}.json").read_text())
    return {header.lower(): value for header, value in recorded["headers"].items()}


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("claude-code", ClientIdentity(Client.CLAUDE_CODE, "ac1339b5-8234-4887-8bd0-68bedc73d63c")),
        ("codex", ClientIdentity(Client.CODEX, "01a23322-9620-7130-8d64-9f6d29011fa7")),
        ("openai-python", ClientIdentity(Client.OPENAI_SDK, None)),
        ("anthropic-python", ClientIdentity(Client.ANTHROPIC_SDK, None)),
    ],
)
def test_the_recorded_headers_of_real_clients(name: str, expected: ClientIdentity) -> None:
    assert detect_client(recorded_headers(name)) == expected


def test_claude_code_is_told_from_the_anthropic_sdk_it_is_built_on() -> None:
    headers = recorded_headers("claude-code")
    assert headers["x-stainless-lang"] == "js"  # the Anthropic TypeScript SDK's headers, under its own agent
    del headers["user-agent"]
    assert detect_client(headers).client is Client.CLAUDE_CODE  # its session header names it alone


@pytest.mark.parametrize(
    ("headers", "client"),
    [
        ({"user-agent": "codex_cli_rs/0.87.0 (Mac OS 26.2.0; arm64) ghostty/1.3.0"}, Client.CODEX),
        ({"originator": "codex_vscode", "user-agent": "reqwest"}, Client.CODEX),
        ({"user-agent": "Zed/0.219.4+stable.119.abc123 (macos; aarch64)"}, Client.ZED),
        ({"user-agent": "GitHubCopilotChat/0.37.2026011603"}, Client.GITHUB_COPILOT),
        ({"user-agent": "copilot/0.0.403 (client/cli linux v24.11.1)"}, Client.GITHUB_COPILOT),
        ({"copilot-integration-id": "vscode-chat", "user-agent": "node"}, Client.GITHUB_COPILOT),
        (
            {"user-agent": "opencode/1.16.0 ai-sdk/provider-utils/4.0.23", "copilot-integration-id": "x"},
            Client.OPENCODE,
        ),
        ({"originator": "opencode"}, Client.OPENCODE),
        ({"user-agent": "Cursor/1.5.0"}, Client.CURSOR),
        ({"x-cursor-client-version": "0.50.0", "user-agent": "connect-es/1.6.1"}, Client.CURSOR),
        ({"user-agent": "roo-code/3.45.0 (darwin 25.2.0; arm64) node/22.21.1"}, Client.ROO_CODE),
        ({"user-agent": "RooCode/3.20.0"}, Client.ROO_CODE),
        ({"originator": "roo-code"}, Client.ROO_CODE),
        ({"user-agent": "kilo-code/5.1.0 (darwin 25.2.0; arm64) node/22.21.1"}, Client.KILO_CODE),
        ({"x-title": "Kilo Code", "user-agent": "OpenAI/JS 5.10.1"}, Client.KILO_CODE),
        ({"x-title": "Aider", "user-agent": "OpenAI/Python 1.99.1"}, Client.AIDER),
        ({"user-agent": "OpenAI/JS 5.10.1"}, Client.OPENAI_SDK),
        ({"user-agent": "Anthropic/JS 0.60.0"}, Client.ANTHROPIC_SDK),
        ({"user-agent": "ccclaude-cli/wrong-prefix"}, Client.UNKNOWN),
        ({"user-agent": "python-httpx/0.28.1"}, Client.UNKNOWN),
        ({}, Client.UNKNOWN),
    ],
)
def test_published_user_agents_and_headers(headers: dict[str, str], client: Client) -> None:
    assert detect_client(headers).client is client


def test_every_client_has_a_rule_and_only_known_clients_send_session_ids() -> None:
    assert {rule.client for rule in RULES} == set(Client) - {Client.UNKNOWN}
    assert detect_client({"user-agent": "Zed/1", "session-id": "s"}) == ClientIdentity(Client.ZED, None)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("  s-1  ", "s-1"),
        ("x" * MAX_SESSION_ID, "x" * MAX_SESSION_ID),
        ("x" * (MAX_SESSION_ID + 1), None),
        ("a\x00b", None),
        ("", None),
    ],
)
def test_a_session_id_is_kept_only_when_short_and_printable(value: str, expected: str | None) -> None:
    headers = {"user-agent": "claude-cli/2.1.197 (external, cli)", "x-claude-code-session-id": value}
    assert detect_client(headers) == ClientIdentity(Client.CLAUDE_CODE, expected)


# -- end to end: the SDKs through the gateway, their records, the usage by client --


def ended_record(gateway, interception_id: str, timeout: float = 15) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        response = httpx2.get(f"{gateway.url}/api/v1/interceptions/{interception_id}", timeout=5)
        if response.status_code == 200 and response.json().get("ended_at"):
            return response.json()
        assert time.monotonic() < deadline, f"{interception_id} not recorded: {response.text}"
        time.sleep(0.1)


def anthropic_message(text: str, input_tokens: int, output_tokens: int) -> RawReply:
    message = {
        "id": "msg_up_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-test",
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
    }
    return RawReply(200, orjson.dumps(message))


def usage_cli(database_url: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "shared.cli", "usage", "--since", "1h", *args],
        env={**os.environ, "AIBRIDGE_DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_sdks_records_and_usage_by_client(recording_gateway, recording_database, upstream):
    usage = {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}
    chat, _ = upstream.scenario(*[RawReply(200, completion_body("hi", usage=usage))] * 2)
    claude, _ = upstream.scenario(anthropic_message("hello", 100, 9))
    hi = [{"role": "user", "content": "hi"}]

    openai_sdk = recording_gateway.client()
    ids = [
        openai_sdk.chat.completions.with_raw_response.create(model=chat, messages=hi).headers[
            "x-aibridge-interception-id"
        ]
        for _ in range(2)
    ]
    anthropic_sdk = anthropic.Anthropic(
        base_url=f"{recording_gateway.url}/anthropic", api_key="unused", max_retries=0
    )
    created = anthropic_sdk.messages.with_raw_response.create(model=claude, max_tokens=8, messages=hi)
    ids.append(created.headers["x-aibridge-interception-id"])
    records = [ended_record(recording_gateway, one) for one in ids]
    assert [(record["client"], record["session_id"]) for record in records] == [
        ("openai-sdk", None),
        ("openai-sdk", None),
        ("anthropic-sdk", None),
    ]

    api = f"{recording_gateway.url}/api/v1"
    by_client = httpx2.get(f"{api}/usage", params={"by": "client", "since": "1h"}, timeout=5).json()["data"]
    totals = {row["client"]: (row["interceptions"], row["input_tokens"]) for row in by_client}
    assert (totals["anthropic-sdk"], totals["openai-sdk"]) == ((1, 100), (2, 22))
    only = httpx2.get(f"{api}/usage", params={"by": "model", "client": "anthropic-sdk"}, timeout=5).json()
    assert only["data"] == [
        {
            "model": claude,
            "interceptions": 1,
            "input_tokens": 100,
            "output_tokens": 9,
            "cache_read_tokens": 0,
            "cache_write_tokens": 0,
        }
    ]
    listed = httpx2.get(f"{api}/interceptions", params={"client": "openai-sdk", "model": chat}, timeout=5)
    assert sorted(item["id"] for item in listed.json()["data"]) == sorted(ids[:2])

    report = usage_cli(recording_database.url, "--by", "client").splitlines()
    assert report[2].split()[0] == "CLIENT"
    assert {line.split()[0]: line.split()[1] for line in report[3:-2]} == {
        client: str(count) for client, (count, _) in totals.items()
    }
    of_one = usage_cli(recording_database.url, "--by", "model", "--client", "anthropic-sdk").splitlines()
    assert of_one[0].startswith("Token usage from anthropic-sdk, since")
    assert [line.split()[:2] for line in of_one[3:-2]] == [[claude, "1"]]
