"""What the client sees when the upstream, the request or the worker fails."""

from __future__ import annotations

import threading
import time

import httpx2
import openai
import orjson
import pytest

from shared.local import free_port
from tests.fake_upstream import RawReply, SSEReply, chunk, text_stream

RATE_LIMITED = orjson.dumps(
    {
        "error": {
            "message": "Rate limit reached",
            "type": "requests",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    }
)
HI = [{"role": "user", "content": "hi"}]


def test_upstream_429_before_the_stream_keeps_status_and_body(gateway, upstream):
    model, _ = upstream.scenario(RawReply(429, RATE_LIMITED))
    with pytest.raises(openai.RateLimitError) as caught:
        gateway.client().chat.completions.create(model=model, messages=HI, stream=True)
    assert caught.value.status_code == 429
    assert caught.value.response.content == RATE_LIMITED
    assert caught.value.code == "rate_limit_exceeded"


def test_error_mid_stream_ends_the_stream_with_an_openai_error_event(gateway, upstream):
    error = b'{"error": {"message": "The server had an error", "type": "server_error"}}'
    model, _ = upstream.scenario(SSEReply([chunk("one"), chunk("two"), error], done=False))
    received = []
    with pytest.raises(openai.APIError) as caught:
        for part in gateway.client().chat.completions.create(model=model, messages=HI, stream=True):
            received.append(part.choices[0].delta.content)
    assert received == ["one", "two"]
    assert "The server had an error" in caught.value.message
    body = {"model": model, "messages": HI, "stream": True}
    raw = httpx2.post(f"{gateway.base_url}/chat/completions", json=body, timeout=10)
    events = [line[6:] for line in raw.content.split(b"\n") if line.startswith(b"data: ")]
    assert orjson.loads(events[2]) == {
        "error": {"message": "The server had an error", "type": "server_error", "code": None}
    }


def test_upstream_dropping_the_connection_mid_stream_gives_an_error_event(gateway, upstream):
    model, _ = upstream.scenario(SSEReply(text_stream(["a", "b", "c"]), drop_after=2))
    body = {"model": model, "messages": HI, "stream": True}
    raw = httpx2.post(f"{gateway.base_url}/chat/completions", json=body, timeout=10)
    assert raw.status_code == 200
    events = [line[6:] for line in raw.content.split(b"\n") if line.startswith(b"data: ")]
    assert len(events) == 3  # a, b, the error: no [DONE] the upstream never sent
    assert orjson.loads(events[2])["error"]["code"] == "upstream_connection_lost"


def test_upstream_silent_past_the_read_timeout_is_a_504(gateway, upstream):
    model, _ = upstream.scenario(RawReply(200, b"{}", delay=5))
    started = time.monotonic()
    response = httpx2.post(
        f"{gateway.base_url}/chat/completions", json={"model": model, "messages": HI}, timeout=10
    )
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "upstream_timeout"
    assert time.monotonic() - started < 4.5


def test_upstream_unreachable_is_a_502(make_gateway):
    closed = make_gateway(AIBRIDGE_OPENAI_BASE_URL=f"http://127.0.0.1:{free_port()}/v1")
    with pytest.raises(openai.APIStatusError) as caught:
        closed.client().chat.completions.create(model="m", messages=HI, stream=True)
    assert caught.value.status_code == 502
    error = caught.value.response.json()["error"]
    assert error["code"] == "upstream_unreachable"
    assert set(error) >= {"message", "type", "code"}


def nested(depth: int) -> bytes:
    """A valid chat body with a value nested ``depth`` levels deep."""
    return b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "metadata": %s}' % (
        b"[" * depth + b"]" * depth
    )


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        (b"[1, 2]", None),
        (b'{"messages": [{"role": "user", "content": "x"}]}', "model"),
        (b'{"model": "m"}', "messages"),
        (b'{"model": "m", "messages": []}', "messages"),
        (b'{"model": "m", "messages": ["x"]}', "messages"),
        (b'{"model": "m", "messages": [{"role": "user"}], "stream": "yes"}', "stream"),
        (nested(300), None),  # orjson re-encodes at most 254 levels: these were a plain-text 500
        (nested(1000), None),
        (
            b'{"model": "m", "messages": [{"role": "user"}], "stream": true, "stream_options": "x"}',
            "stream_options",
        ),
        (
            b'{"model": "m", "messages": [{"role": "user"}], "stream": true, "stream_options": []}',
            "stream_options",
        ),
        (b'{"model": "m", "messages": [{"role": "user"}], "tools": "x"}', "tools"),
        (b'{"model": "m", "messages": [{"role": "user"}], "tools": [1]}', "tools"),
        (b'{"model": "m", "messages": [{"role": "user"}], "n": "2"}', "n"),
        (b'{"model": "m", "messages": [{"role": "user"}], "n": true}', "n"),
    ],
)
def test_bad_request_is_a_400_and_nothing_is_enqueued(gateway, redis_client, body, param):
    streams_before = set(redis_client.keys(f"{gateway.prefix}stream:*"))
    response = httpx2.post(
        f"{gateway.base_url}/chat/completions", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert error["message"]
    assert redis_client.zcard(f"{gateway.prefix}queue") == 0
    assert set(redis_client.keys(f"{gateway.prefix}stream:*")) <= streams_before


def test_unknown_route_is_an_openai_shaped_404(gateway):
    response = httpx2.get(f"{gateway.base_url}/nothing-here")
    assert response.status_code == 404
    assert set(response.json()["error"]) >= {"message", "type", "code"}


def test_no_worker_is_a_503_with_retry_after_and_the_job_never_runs(make_gateway, upstream):
    lonely = make_gateway(workers=0, AIBRIDGE_PICKUP_TIMEOUT="1")
    assert httpx2.get(f"{lonely.url}/readyz").status_code == 503
    model, scenario = upstream.scenario(SSEReply(text_stream(["late"])))
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as caught:
        lonely.client().chat.completions.create(model=model, messages=HI, stream=True)
    assert caught.value.status_code == 503
    assert int(caught.value.response.headers["Retry-After"]) >= 1
    assert caught.value.response.json()["error"]["code"] == "no_worker_available"
    assert time.monotonic() - started < 3
    lonely.add_worker()
    lonely.wait_until(lambda: httpx2.get(f"{lonely.url}/readyz").status_code == 200, "a worker")
    time.sleep(1.5)
    assert scenario.received == []


def test_worker_killed_mid_stream_gives_the_client_an_error_within_the_heartbeat_window(
    make_gateway, upstream
):
    doomed = make_gateway()
    model, _ = upstream.scenario(SSEReply(text_stream(["first"] + ["more"] * 50), delay=0.2))
    stream = doomed.client().chat.completions.create(model=model, messages=HI, stream=True)
    iterator = iter(stream)
    assert next(iterator).choices[0].delta.content == "first"
    doomed.workers[0].kill()
    killed_at = time.monotonic()
    with pytest.raises(openai.APIError) as caught:
        for _ in iterator:
            pass
    assert "lost contact with the worker" in caught.value.message
    assert time.monotonic() - killed_at < 3 + 1.5  # heartbeat timeout 3 s in the tests, plus slack


def test_worker_killed_before_the_first_chunk_is_a_502(make_gateway, upstream):
    doomed = make_gateway()
    model, scenario = upstream.scenario(SSEReply(text_stream(["too late"]), first_delay=30))

    def kill_when_upstream_called() -> None:
        doomed.wait_until(lambda: scenario.received, "the upstream call")
        doomed.workers[0].kill()

    killer = threading.Thread(target=kill_when_upstream_called)
    killer.start()
    body = {"model": model, "messages": HI, "stream": True}
    response = httpx2.post(f"{doomed.base_url}/chat/completions", json=body, timeout=15)
    killer.join()
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "worker_timeout"
