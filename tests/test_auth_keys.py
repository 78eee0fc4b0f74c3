"""Client keys: 401 without a valid one, revocation within the cache bound, the actor on every record, resume
only for the key's actor, and no AIBRIDGE_AUTH=none on a non-loopback bind."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time

import httpx2
import openai
import pytest

from tests.fake_upstream import SSEReply, text_stream
from tests.test_cli import run_cli

HI = [{"role": "user", "content": "hi"}]
CACHE_TTL = 1.0


@pytest.fixture(scope="module")
def keyed(make_gateway_module):
    return make_gateway_module(AIBRIDGE_AUTH="keys", AIBRIDGE_KEY_CACHE_TTL=str(CACHE_TTL))


def chat(gateway, model: str, headers: dict[str, str], stream: bool = True) -> httpx2.Response:
    body = {"model": model, "messages": HI, "stream": stream}
    return httpx2.post(f"{gateway.base_url}/chat/completions", json=body, headers=headers, timeout=20)


def assert_401(response: httpx2.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["WWW-Authenticate"] == "Bearer"
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", "invalid_api_key")
    assert error["message"]


def test_missing_wrong_and_malformed_keys_get_401_and_nothing_reaches_the_queue(
    keyed, upstream, redis_client
):
    model, scenario = upstream.scenario(SSEReply(text_stream(["never"])))
    unknown = "aib_000000000000_" + "x" * 43
    for headers in (
        {},
        {"Authorization": f"Bearer {unknown}"},
        {"X-Api-Key": unknown},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer"},
    ):
        assert_401(chat(keyed, model, headers))
    assert_401(httpx2.get(f"{keyed.base_url}/models", timeout=5))
    assert_401(httpx2.get(f"{keyed.url}/api/v1/usage", timeout=5))
    with pytest.raises(openai.AuthenticationError):
        keyed.client(api_key=unknown).chat.completions.create(model=model, messages=HI)
    assert scenario.received == []
    assert redis_client.zcard(f"{keyed.prefix}queue") == 0
    assert httpx2.get(f"{keyed.url}/healthz", timeout=5).status_code == 200  # probes need no key


def test_a_key_works_until_it_is_revoked_then_fails_within_the_cache_ttl(keyed, upstream):
    key = keyed.create_key("carol")
    model, scenario = upstream.scenario(SSEReply(text_stream(["ok"])))
    chunks = list(keyed.client(api_key=key).chat.completions.create(model=model, messages=HI, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "ok"
    assert chat(keyed, model, {"X-Api-Key": key}).status_code == 200  # as Anthropic clients send it
    # the client key authenticates to the gateway only: the upstream gets the central key
    assert {r.headers["Authorization"] for r in scenario.received} == {"Bearer sk-upstream-test-key"}

    key_id = key.split("_")[1]
    revoked = run_cli(
        "keys", "revoke", key_id, env={"AIBRIDGE_DATABASE_URL": keyed.env["AIBRIDGE_DATABASE_URL"]}
    )
    assert revoked.returncode == 0, revoked.stderr
    revoked_at = time.monotonic()
    while (status := chat(keyed, model, {"Authorization": f"Bearer {key}"}).status_code) == 200:
        assert time.monotonic() - revoked_at < CACHE_TTL + 1, "a revoked key kept working past the cache TTL"
        time.sleep(0.1)
    assert status == 401
    listed = run_cli("keys", "list", env={"AIBRIDGE_DATABASE_URL": keyed.env["AIBRIDGE_DATABASE_URL"]})
    line = next(line for line in listed.stdout.splitlines() if line.startswith(key_id))
    assert "carol" in line and line.split()[-1] != "-"  # the REVOKED column has a time
    assert key.split("_", 2)[2] not in listed.stdout


def test_every_record_carries_the_actor_and_its_metadata(keyed, upstream):
    key = keyed.create_key("dave", Username="dave", team="platform")
    model, scenario = upstream.scenario(SSEReply(text_stream(["a"])))
    ids = [
        chat(keyed, model, {"Authorization": f"Bearer {key}"}, stream).headers["X-AIBridge-Interception-Id"]
        for stream in (True, False)
    ]
    database = keyed.env["AIBRIDGE_DATABASE_URL"].removeprefix("sqlite+aiosqlite:///")
    deadline = time.monotonic() + 10
    while True:
        with sqlite3.connect(database) as connection:
            rows = connection.execute(
                "SELECT id, actor_id, actor_metadata FROM interceptions WHERE ended_at IS NOT NULL"
                f" AND id IN ({','.join('?' * len(ids))})",
                ids,
            ).fetchall()
        if len(rows) == len(ids) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert sorted(rows) == sorted((i, "dave", '{"Username": "dave", "team": "platform"}') for i in ids)
    # actor headers go upstream only when AIBRIDGE_SEND_ACTOR_HEADERS is on (see test_actor_headers.py)
    assert not [
        name for r in scenario.received for name in r.headers if name.lower().startswith("x-ai-bridge")
    ]
    # through the usage API, a key sees its own actor's records only
    other = keyed.create_key("erin")
    mine = httpx2.get(f"{keyed.url}/api/v1/interceptions/{ids[0]}", headers={"X-Api-Key": key}, timeout=5)
    assert mine.status_code == 200 and mine.json()["actor_id"] == "dave"
    theirs = httpx2.get(f"{keyed.url}/api/v1/interceptions/{ids[0]}", headers={"X-Api-Key": other}, timeout=5)
    assert theirs.status_code == 404
    listing = httpx2.get(f"{keyed.url}/api/v1/interceptions", headers={"X-Api-Key": other}, timeout=5)
    assert listing.json()["data"] == []


def test_only_the_actor_that_made_a_stream_may_resume_it(keyed, upstream):
    owner, stranger = keyed.create_key("frank"), keyed.create_key("grace")
    model, _ = upstream.scenario(SSEReply(text_stream([f"w{i} " for i in range(20)]), delay=0.1))
    started: dict[str, str] = {}

    def stream() -> None:
        with httpx2.stream(
            "POST",
            f"{keyed.base_url}/chat/completions",
            json={"model": model, "messages": HI, "stream": True},
            headers={"Authorization": f"Bearer {owner}"},
            timeout=20,
        ) as response:
            started["id"] = response.headers["X-AIBridge-Interception-Id"]
            response.read()

    thread = threading.Thread(target=stream)
    thread.start()
    keyed.wait_until(lambda: "id" in started, "the stream to open", timeout=10)
    events = f"{keyed.base_url}/chat/completions/{started['id']}/events"
    refused = httpx2.get(events, headers={"Authorization": f"Bearer {stranger}"}, timeout=10)
    assert refused.status_code == 404
    assert refused.json()["error"]["code"] == "not_found"
    assert_401(httpx2.get(events, timeout=10))
    resumed = httpx2.get(events, headers={"Authorization": f"Bearer {owner}"}, timeout=20)
    thread.join(20)
    assert resumed.status_code == 200
    assert b"w19" in resumed.content and resumed.content.rstrip().endswith(b"data: [DONE]")


def test_auth_none_is_refused_on_a_non_loopback_bind():
    result = run_cli("api", "--host", "0.0.0.0", env={"AIBRIDGE_AUTH": "none"})
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "AIBRIDGE_AUTH" in result.stderr and "0.0.0.0" in result.stderr
    for host in ("127.0.0.1", "::1", "localhost"):  # loopback binds may run without keys
        code = f"from shared.config import load_settings; load_settings(host={host!r}, auth='none')"
        assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
