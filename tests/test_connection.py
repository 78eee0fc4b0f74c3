"""The client's connection: keep-alive pings, and what a client that leaves does to its job."""

from __future__ import annotations

import socket
import time

import orjson

from tests.fake_upstream import SSEReply, text_stream

HI = [{"role": "user", "content": "hi"}]


def test_pings_keep_an_idle_stream_open_and_the_sdk_parses_around_them(gateway, upstream):
    # keep-alive is 0.5 s in the test gateway: a 2 s silence gets pings between events that carry `id:`
    model, _ = upstream.scenario(SSEReply(text_stream(["before", " after"]), pause_after=1, pause=2))
    stream = gateway.client().chat.completions.create(model=model, messages=HI, stream=True)
    text = "".join(part.choices[0].delta.content or "" for part in stream if part.choices)
    assert text == "before after"

    model, _ = upstream.scenario(SSEReply(text_stream(["before", " after"]), pause_after=1, pause=2))
    raw = raw_stream(gateway, model)
    assert raw.count(b": ping\n") >= 2
    assert b": ping\n\n" not in raw  # a blank line after `id:` events makes the SDK parse an empty event
    assert raw.index(b"before") < raw.index(b": ping\n") < raw.index(b" after")


def raw_stream(gateway, model: str) -> bytes:
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as conn:
        conn.sendall(request_bytes(gateway, model))
        received = b""
        while data := conn.recv(65536):
            received += data
            if b"data: [DONE]" in received:
                break
    return received


def request_bytes(gateway, model: str) -> bytes:
    body = orjson.dumps({"model": model, "messages": HI, "stream": True})
    return (
        f"POST /openai/v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{gateway.port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def assert_upstream_closed_within_a_second(scenario) -> None:
    """Call right after the client left: the gateway must close its upstream connection within 1 s."""
    left_at = time.monotonic()
    while scenario.received[0].connection_closed_at is None and time.monotonic() < left_at + 5:
        time.sleep(0.01)
    closed_at = scenario.received[0].connection_closed_at
    assert closed_at is not None, "the upstream connection stayed open"
    assert closed_at - left_at < 1.0


def test_client_leaving_mid_stream_closes_the_upstream_within_a_second(gateway, upstream):
    model, scenario = upstream.scenario(SSEReply(text_stream(["tick"] * 400), delay=0.05))
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as conn:
        conn.sendall(request_bytes(gateway, model))
        received = b""
        while received.count(b"tick") < 3:
            received += conn.recv(65536)
    assert_upstream_closed_within_a_second(scenario)


def test_client_leaving_while_the_upstream_is_silent_closes_it_too(gateway, upstream):
    model, scenario = upstream.scenario(SSEReply(text_stream(["a", "b"]), pause_after=1, pause=20))
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as conn:
        conn.sendall(request_bytes(gateway, model))
        received = b""
        while b'"a"' not in received:
            received += conn.recv(65536)
    assert_upstream_closed_within_a_second(scenario)


def test_client_leaving_before_the_stream_opens_cancels_the_job(gateway, upstream):
    model, scenario = upstream.scenario(SSEReply(text_stream(["late"]), first_delay=20))
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as conn:
        conn.sendall(request_bytes(gateway, model))
        deadline = time.monotonic() + 5
        while not scenario.received and time.monotonic() < deadline:
            time.sleep(0.01)
        assert scenario.received
    assert_upstream_closed_within_a_second(scenario)


def test_the_sdk_survives_a_12_second_silence_with_the_default_keepalive(make_gateway, upstream):
    # DESIGN.md: the openai SDK broke on a blank line after an `id:` event; this is the gap that showed it
    deployment = make_gateway(AIBRIDGE_KEEPALIVE_INTERVAL="10", AIBRIDGE_UPSTREAM_READ_TIMEOUT="30")
    model, _ = upstream.scenario(SSEReply(text_stream(["before", " after"]), pause_after=1, pause=12))
    stream = deployment.client(timeout=60).chat.completions.create(model=model, messages=HI, stream=True)
    assert "".join(part.choices[0].delta.content or "" for part in stream if part.choices) == "before after"
