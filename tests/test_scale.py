"""Two API instances and two workers on one Redis: many concurrent streams, and processes that stop or die
while streams are in flight."""

from __future__ import annotations

import asyncio
import signal
import time

import httpx2
import orjson
import pytest

from tests.fake_upstream import SSEReply, text_stream

WORDS = [f"t{i} " for i in range(10)]


async def one_stream(client: httpx2.AsyncClient, url: str, model: str) -> str:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    text = []
    async with client.stream("POST", f"{url}/openai/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            return f"HTTP {response.status_code}"
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            data = line[6:]
            if data == "[DONE]":
                return "".join(text)
            chunk = orjson.loads(data)
            if "error" in chunk:
                return f"error: {chunk['error']['code']}"
            for choice in chunk.get("choices") or []:
                text.append(choice["delta"].get("content") or "")
    return "cut: " + "".join(text)


async def many_streams(urls: list[str], model: str, count: int) -> list[str]:
    limits = httpx2.Limits(max_connections=count)
    async with httpx2.AsyncClient(timeout=60, limits=limits) as client:
        return await asyncio.gather(*(one_stream(client, urls[i % len(urls)], model) for i in range(count)))


@pytest.fixture
def two_by_two(make_gateway):
    deployment = make_gateway(workers=2)
    second_api, _ = deployment.add_api()
    deployment.wait_until(
        lambda: httpx2.get(f"{deployment.url}/readyz").json()["workers"] == 2, "two live workers"
    )
    return deployment, [deployment.url, second_api]


def test_200_concurrent_streams_through_two_apis_and_two_workers(two_by_two, upstream):
    _, urls = two_by_two
    model, scenario = upstream.scenario(SSEReply(text_stream(WORDS), delay=0.02))
    started = time.monotonic()
    results = asyncio.run(many_streams(urls, model, 200))
    assert results == ["".join(WORDS)] * 200
    assert len(scenario.received) == 200
    assert time.monotonic() - started < 60


def test_a_worker_killed_mid_stream_fails_only_its_own_streams(two_by_two, upstream):
    deployment, urls = two_by_two
    model, _ = upstream.scenario(SSEReply(text_stream(WORDS * 3), delay=0.1))

    async def scenario() -> list[str]:
        streams = asyncio.ensure_future(many_streams(urls, model, 20))
        await asyncio.sleep(1.0)
        deployment.workers[0].kill()
        killed_at = time.monotonic()
        results = await streams
        assert time.monotonic() - killed_at < 3 + 3  # the heartbeat timeout (3 s here), then the rest ends
        return results

    results = asyncio.run(scenario())
    complete = [r for r in results if r == "".join(WORDS * 3)]
    failed = [r for r in results if r == "error: worker_timeout"]
    assert complete and failed
    assert len(complete) + len(failed) == 20


def test_sigterm_on_an_api_instance_lets_its_open_streams_finish(two_by_two, upstream):
    deployment, urls = two_by_two
    model, _ = upstream.scenario(SSEReply(text_stream(WORDS * 2), delay=0.1))

    async def scenario() -> list[str]:
        streams = asyncio.ensure_future(many_streams([urls[0]], model, 10))
        await asyncio.sleep(0.8)
        deployment.api.send_signal(signal.SIGTERM)
        return await streams

    assert asyncio.run(scenario()) == ["".join(WORDS * 2)] * 10
    assert deployment.api.wait(10) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once drained
    with pytest.raises(httpx2.HTTPError):
        httpx2.get(f"{urls[0]}/healthz", timeout=1)
