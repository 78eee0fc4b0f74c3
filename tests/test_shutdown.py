"""A worker told to stop (SIGTERM) takes no new jobs and finishes the ones it runs, within a bound."""

from __future__ import annotations

import signal
import time

import httpx2
import openai
import pytest

from tests.fake_upstream import SSEReply, text_stream

HI = [{"role": "user", "content": "hi"}]


def test_sigterm_lets_running_streams_finish(make_gateway, upstream):
    deployment = make_gateway()
    model, _ = upstream.scenario(SSEReply(text_stream([f"{i} " for i in range(30)]), delay=0.1))
    stream = iter(deployment.client().chat.completions.create(model=model, messages=HI, stream=True))
    first = next(stream)
    worker = deployment.workers[0]
    worker.send_signal(signal.SIGTERM)
    rest = list(stream)
    text = "".join(part.choices[0].delta.content or "" for part in [first, *rest] if part.choices)
    assert text == "".join(f"{i} " for i in range(30))
    assert worker.wait(10) == 0


def test_streams_still_running_at_the_shutdown_bound_end_with_an_error_event(make_gateway, upstream):
    deployment = make_gateway(AIBRIDGE_WORKER_SHUTDOWN_TIMEOUT="1")
    model, _ = upstream.scenario(SSEReply(text_stream(["tick"] * 200), delay=0.1))
    stream = iter(deployment.client().chat.completions.create(model=model, messages=HI, stream=True))
    interception_id = next(stream).id
    deployment.workers[0].send_signal(signal.SIGTERM)
    stopped_at = time.monotonic()
    with pytest.raises(openai.APIError, match="worker stopped before the answer was complete"):
        for _ in stream:
            pass
    assert time.monotonic() - stopped_at < 2.5  # the bound (1 s) and a poll, not the heartbeat timeout
    assert deployment.workers[0].wait(10) == 0
    record = httpx2.get(f"{deployment.url}/api/v1/interceptions/{interception_id}").json()
    assert record["outcome"] == "worker_error"  # the stopping worker flushed it before exiting
