"""Bring your own key: the client's provider key reaches the upstream, and nowhere else in clear: not the
logs, not Redis (during and after the stream), not the database."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx2
import pytest
import redis
from cryptography.fernet import Fernet

from tests.anthropic_upstream import message_events, sse_reply
from tests.fake_upstream import SSEReply, text_stream

HI = [{"role": "user", "content": "hi"}]


def everything_in(client: redis.Redis) -> bytes:
    """Every key of the Redis server and every value under it, whatever its type, as one blob."""
    parts: list[bytes] = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key).decode()
        parts.append(key)
        if kind == "string":
            parts.append(client.get(key) or b"")
        elif kind == "list":
            parts.extend(client.lrange(key, 0, -1))
        elif kind == "set":
            parts.extend(client.smembers(key))
        elif kind == "zset":
            parts.extend(member for member, _ in client.zrange(key, 0, -1, withscores=True))
        elif kind == "hash":
            parts.extend(f for pair in client.hgetall(key).items() for f in pair)
        elif kind == "stream":
            for _, fields in client.xrange(key):
                parts.extend(f for pair in fields.items() for f in pair)
    return b"\n".join(parts)


@pytest.fixture(scope="module")
def byok_gateway(make_gateway_module):
    # debug logging: the most a process ever writes (arq's job lines included)
    return make_gateway_module(
        AIBRIDGE_AUTH="keys", AIBRIDGE_SECRET_KEY=Fernet.generate_key().decode(), AIBRIDGE_LOG_LEVEL="debug"
    )


def test_the_clients_key_is_used_upstream_and_stored_nowhere_in_clear(byok_gateway, upstream, redis_client):
    own_key = "sk-own-" + Fernet.generate_key().decode()[:32]
    client_key = byok_gateway.create_key("hana")
    model, scenario = upstream.scenario(SSEReply(text_stream([f"w{i} " for i in range(12)]), delay=0.1))
    result: dict[str, httpx2.Response] = {}

    def stream() -> None:
        result["response"] = httpx2.post(
            f"{byok_gateway.base_url}/chat/completions",
            json={"model": model, "messages": HI, "stream": True},
            headers={
                "Authorization": f"Bearer {client_key}",
                "X-Upstream-Authorization": f"Bearer {own_key}",
            },
            timeout=20,
        )

    thread = threading.Thread(target=stream)
    thread.start()
    byok_gateway.wait_until(lambda: scenario.received, "the upstream call", timeout=10)
    during = everything_in(redis_client)
    thread.join(20)
    after = everything_in(redis_client)

    assert result["response"].status_code == 200 and b"w11" in result["response"].content
    assert [r.headers["Authorization"] for r in scenario.received] == [f"Bearer {own_key}"]
    assert b"encrypted_upstream_key" in during  # the scan did see the job while it ran
    for blob in (during, after):
        assert own_key.encode() not in blob
    assert own_key not in byok_gateway.output()
    database = Path(byok_gateway.env["AIBRIDGE_DATABASE_URL"].removeprefix("sqlite+aiosqlite:///"))
    for file in database.parent.glob(database.name + "*"):  # the database, its WAL and shared memory
        assert own_key.encode() not in file.read_bytes()

    # the next request without its own key uses the central one again
    plain = httpx2.post(
        f"{byok_gateway.base_url}/chat/completions",
        json={"model": model, "messages": HI, "stream": True},
        headers={"X-Api-Key": client_key},
        timeout=20,
    )
    assert plain.status_code == 200
    assert scenario.received[-1].headers["Authorization"] == "Bearer sk-upstream-test-key"


def test_a_malformed_upstream_key_is_a_400_that_does_not_echo_it(byok_gateway, upstream):
    client_key = byok_gateway.create_key("ivan")
    model, scenario = upstream.scenario(SSEReply(text_stream(["never"])))
    response = httpx2.post(
        f"{byok_gateway.base_url}/chat/completions",
        json={"model": model, "messages": HI},
        headers={"X-Api-Key": client_key, "X-Upstream-Authorization": "Bearer sk-with space-inside"},
        timeout=10,
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "X-Upstream-Authorization"
    assert b"sk-with" not in response.content
    assert scenario.received == []


def test_without_a_secret_key_the_gateway_refuses_the_clients_key(gateway, upstream, redis_client):
    model, scenario = upstream.scenario(SSEReply(text_stream(["never"])))
    response = httpx2.post(
        f"{gateway.base_url}/chat/completions",
        json={"model": model, "messages": HI, "stream": True},
        headers={"X-Upstream-Authorization": "Bearer sk-not-carried-in-clear"},
        timeout=10,
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and "AIBRIDGE_SECRET_KEY" in error["message"]
    assert b"sk-not-carried" not in response.content
    assert scenario.received == []
    assert b"sk-not-carried" not in everything_in(redis_client)


def test_a_clients_own_anthropic_key_goes_upstream_as_x_api_key(byok_gateway, upstream):
    own_key = "sk-ant-own-" + Fernet.generate_key().decode()[:24]
    client_key = byok_gateway.create_key("ines")
    model, scenario = upstream.scenario(sse_reply(message_events("with my own key")))
    response = httpx2.post(
        f"{byok_gateway.url}/anthropic/v1/messages",
        json={"model": model, "max_tokens": 8, "stream": True, "messages": HI},
        headers={"x-api-key": client_key, "X-Upstream-Authorization": f"Bearer {own_key}"},
        timeout=30,
    )
    assert response.status_code == 200 and b"with my own key" in response.content
    (received,) = scenario.received
    assert received.headers["x-api-key"] == own_key
    assert "authorization" not in {name.lower() for name in received.headers}
    assert own_key not in byok_gateway.output()
