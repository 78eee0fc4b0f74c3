"""Limits: the body size (413), and per actor, concurrent requests and requests per minute (429 with
Retry-After), counted in Redis so that they hold across API instances; a slot is freed on every ending."""

from __future__ import annotations

import socket
import threading
import time

import httpx2
import orjson
import pytest

from tests.fake_upstream import RawReply, SSEReply, text_stream

HI = [{"role": "user", "content": "hi"}]
SLOW = [f"w{i} " for i in range(10)]


@pytest.fixture(scope="module")
def one_at_a_time(make_gateway_module):
    """Two API instances, keys on, one concurrent request per actor, bodies up to 4 KiB."""
    deployment = make_gateway_module(
        AIBRIDGE_AUTH="keys", AIBRIDGE_MAX_CONCURRENT_PER_ACTOR="1", AIBRIDGE_MAX_BODY_BYTES="4096"
    )
    second_url, _ = deployment.add_api()
    return deployment, f"{second_url}/openai/v1"


def post(base_url: str, key: str, model: str, **extra) -> httpx2.Response:
    body = {"model": model, "messages": HI, "stream": True, **extra}
    return httpx2.post(f"{base_url}/chat/completions", json=body, headers={"X-Api-Key": key}, timeout=20)


def in_background(base_url: str, key: str, model: str) -> threading.Thread:
    thread = threading.Thread(target=post, args=(base_url, key, model))
    thread.start()
    return thread


def assert_429(response: httpx2.Response, code: str) -> int:
    assert response.status_code == 429, response.text
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("requests", code)
    return int(response.headers["Retry-After"])


def test_bodies_over_the_limit_get_413_whether_or_not_they_declare_their_length(one_at_a_time, upstream):
    deployment, _ = one_at_a_time
    key = deployment.create_key("big")
    model, scenario = upstream.scenario(SSEReply(text_stream(["ok"])))
    url = f"{deployment.base_url}/chat/completions"
    big = orjson.dumps({"model": model, "messages": [{"role": "user", "content": "x" * 20_000}]})

    def chunked():
        for start in range(0, len(big), 1000):
            yield big[start : start + 1000]

    for content in (big, chunked()):
        response = httpx2.post(url, content=content, headers={"X-Api-Key": key}, timeout=10)
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "request_too_large"
    assert scenario.received == []
    assert post(deployment.base_url, key, model).status_code == 200


def test_concurrency_is_limited_across_api_instances_and_freed_at_the_end(one_at_a_time, upstream):
    deployment, second = one_at_a_time
    key, other = deployment.create_key("busy"), deployment.create_key("idle")
    model, scenario = upstream.scenario(SSEReply(text_stream(SLOW), delay=0.1), SSEReply(text_stream(["ok"])))
    running = in_background(deployment.base_url, key, model)
    deployment.wait_until(lambda: scenario.received, "the first request upstream", timeout=10)
    assert assert_429(post(second, key, model), "concurrency_limit_exceeded") >= 1
    assert post(second, other, model).status_code == 200  # another actor is not held back
    running.join(20)
    assert post(second, key, model).status_code == 200  # the slot is free as soon as the stream ends


def test_a_slot_is_freed_after_an_upstream_error(one_at_a_time, upstream):
    deployment, second = one_at_a_time
    key = deployment.create_key("unlucky")
    failing = b'{"error":{"message":"boom","type":"server_error","code":null}}'
    model, _ = upstream.scenario(RawReply(500, failing), SSEReply(text_stream(["ok"])))
    assert post(deployment.base_url, key, model).status_code == 500
    assert post(second, key, model).status_code == 200


def test_a_slot_is_freed_after_the_client_disconnects(one_at_a_time, upstream):
    deployment, second = one_at_a_time
    key = deployment.create_key("leaver")
    model, scenario = upstream.scenario(
        SSEReply(text_stream(SLOW * 5), delay=0.1), SSEReply(text_stream(["ok"]))
    )
    body = orjson.dumps({"model": model, "messages": HI, "stream": True})
    with socket.create_connection(("127.0.0.1", deployment.port), timeout=10) as conn:
        conn.sendall(
            f"POST /openai/v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"X-Api-Key: {key}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        assert b"200 OK" in conn.recv(65536)
        assert_429(post(second, key, model), "concurrency_limit_exceeded")
    left = time.monotonic()
    while (response := post(second, key, model)).status_code == 429:
        assert time.monotonic() - left < 2, "the slot of a client that left was not freed"
        time.sleep(0.1)
    assert response.status_code == 200
    assert scenario.received[0].connection_closed_at is not None


def test_requests_per_minute_are_counted_across_api_instances(make_gateway, upstream):
    deployment = make_gateway(AIBRIDGE_AUTH="keys", AIBRIDGE_REQUESTS_PER_MINUTE_PER_ACTOR="3")
    second = f"{deployment.add_api()[0]}/openai/v1"
    key, other = deployment.create_key("chatty"), deployment.create_key("quiet")
    model, scenario = upstream.scenario(SSEReply(text_stream(["ok"])))
    for base_url in (deployment.base_url, second, deployment.base_url):
        assert post(base_url, key, model).status_code == 200
    retry_after = assert_429(post(second, key, model), "rate_limit_exceeded")
    assert 1 <= retry_after <= 60
    assert len(scenario.received) == 3
    assert post(second, other, model).status_code == 200
