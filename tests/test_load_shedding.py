"""Above AIBRIDGE_MAX_QUEUE_DEPTH waiting jobs the API sheds requests: 503, Retry-After, nothing enqueued."""

from __future__ import annotations

import time

import httpx2

from tests.fake_upstream import SSEReply, text_stream

HI = [{"role": "user", "content": "hi"}]


def test_requests_over_the_queue_depth_are_shed_with_503(make_gateway, upstream, redis_client):
    # no worker: what is enqueued stays queued until the pickup timeout
    deployment = make_gateway(workers=0, AIBRIDGE_MAX_QUEUE_DEPTH="2", AIBRIDGE_PICKUP_TIMEOUT="4")
    model, scenario = upstream.scenario(SSEReply(text_stream(["never"])))
    body = {"model": model, "messages": HI, "stream": True}
    url = f"{deployment.base_url}/chat/completions"
    waiting = [deployment.stream_in_background(model, timeout=10) for _ in range(2)]
    pending = f"{deployment.prefix}pending"
    deployment.wait_until(lambda: redis_client.llen(pending) == 2, "two queued jobs", timeout=5)

    started = time.monotonic()
    shed = httpx2.post(url, json=body, timeout=10)
    assert shed.status_code == 503
    assert time.monotonic() - started < 1
    assert int(shed.headers["Retry-After"]) > 0
    assert shed.json()["error"]["code"] == "queue_full"
    assert redis_client.llen(pending) == 2
    assert redis_client.zcard(f"{deployment.prefix}queue") == 2
    for thread in waiting:
        thread.join(10)
    assert scenario.received == []
