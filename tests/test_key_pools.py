"""Key pools: several central keys per provider, shared by two workers through Redis; a 429 cools a key, a
401/403 disables it, the request moves to the next key without its client seeing the failed attempt, and
with every key out the client gets its family's 429 or 503."""

from __future__ import annotations

import json

import anthropic
import httpx2
import openai
import pytest
import redis
from cryptography.fernet import Fernet

from shared.key_pool import fingerprint
from shared.local import free_port
from tests.fake_upstream import ByKey, RawReply, SSEReply, text_stream, upstream_key
from tests.test_metrics import samples

HI = [{"role": "user", "content": "hi"}]
OK = SSEReply(text_stream(["o", "k"]))
DEFAULT_KEYS = ["sk-pool-default-aaaa", "sk-pool-default-bbbb"]  # AIBRIDGE_OPENAI_API_KEY, comma-separated
REFUSE_KEYS = ["sk-refuse-1111", "sk-refuse-2222", "sk-refuse-3333"]
COOL_KEYS = ["sk-ant-cool-1111", "sk-ant-cool-2222"]
DEAD_KEYS = ["sk-dead-1111", "sk-dead-2222"]
BYOK_KEYS = ["sk-byok-1111", "sk-byok-2222"]
COOLDOWN = 9


def rate_limited(**headers: str) -> RawReply:
    body = b'{"error": {"message": "slow down", "type": "requests", "code": "rate_limit_exceeded"}}'
    return RawReply(429, body, {"Content-Type": "application/json", **headers})


REFUSED = RawReply(401, b'{"error": {"message": "bad key", "type": "invalid_request_error", "code": null}}')


@pytest.fixture(scope="module")
def pooled(make_gateway_module, upstream):
    """One deployment, two workers (each with its metrics port), a pool per provider under test."""
    ports = [free_port(), free_port()]
    anthropic_url = upstream.base_url.removesuffix("/v1")
    configured = [
        {"name": "refuse", "type": "openai", "base_url": upstream.base_url, "keys": REFUSE_KEYS},
        {"name": "cool", "type": "anthropic", "base_url": anthropic_url, "keys": COOL_KEYS},
        {"name": "dead", "type": "openai", "base_url": upstream.base_url, "keys": DEAD_KEYS},
        {"name": "byok", "type": "openai", "base_url": upstream.base_url, "keys": BYOK_KEYS},
    ]
    deployment = make_gateway_module(
        AIBRIDGE_OPENAI_API_KEY=",".join(DEFAULT_KEYS),
        AIBRIDGE_PROVIDERS=json.dumps(configured),
        AIBRIDGE_UPSTREAM_KEY_COOLDOWN=str(COOLDOWN),
        AIBRIDGE_WORKER_METRICS_PORT=str(ports[0]),
        AIBRIDGE_SECRET_KEY=Fernet.generate_key().decode(),
    )
    deployment.add_worker(AIBRIDGE_WORKER_METRICS_PORT=str(ports[1]))
    urls = [f"http://127.0.0.1:{port}/metrics" for port in ports]
    deployment.wait_until(lambda: all(_up(url) for url in urls), "both workers' metrics")
    deployment.metrics_urls = urls
    return deployment


def _up(url: str) -> bool:
    try:
        return httpx2.get(url, timeout=1).status_code == 200
    except httpx2.HTTPError:
        return False


def _ended(url: str) -> bool:
    answer = httpx2.get(url, timeout=5)
    return answer.status_code == 200 and answer.json()["outcome"] is not None


def metric(deployment, name: str, **labels: str) -> float:
    """The sum over both workers of one sample."""
    key = (name, tuple(sorted(labels.items())))
    return sum(samples(url).get(key, 0.0) for url in deployment.metrics_urls)


def keys_used(scenario) -> list[str | None]:
    return [upstream_key(received.headers) for received in scenario.received]


def chat(deployment, provider: str, model: str) -> openai.OpenAI:
    client = openai.OpenAI(base_url=f"{deployment.url}/{provider}/v1", api_key="unused", max_retries=0)
    return client.chat.completions.with_raw_response.create(model=model, messages=HI, stream=True)


def test_a_rate_limited_key_moves_its_request_and_the_next_ones_to_another_key(pooled, upstream):
    cooling, working = DEFAULT_KEYS
    model, scenario = upstream.scenario(ByKey({cooling: rate_limited(**{"retry-after": "30"})}, OK))
    for _ in range(4):
        answer = chat(pooled, "openai", model)
        assert answer.status_code == 200 and "retry-after" not in answer.headers  # not the 429's
        assert "".join(c.choices[0].delta.content or "" for c in answer.parse() if c.choices) == "ok"
    used = keys_used(scenario)
    assert used.count(cooling) == 1 and used.count(working) == 4  # the rate-limited key, asked once
    interception = answer.headers["x-aibridge-interception-id"]
    record = f"{pooled.url}/api/v1/interceptions/{interception}"
    pooled.wait_until(lambda: _ended(record), "the interception's record")
    assert httpx2.get(record).json()["key_hint"] == "sk-...bbbb"  # the key that answered, masked
    pooled.wait_until(
        lambda: metric(pooled, "aibridge_upstream_key_failovers_total", provider="openai") == 1,
        "the failover counted",
    )
    cooled = {"provider": "openai", "state": "cooling"}
    assert metric(pooled, "aibridge_upstream_key_transitions_total", **cooled) == 1


def test_a_refused_key_is_never_used_again_by_either_worker(pooled, upstream, redis_url):
    refused = REFUSE_KEYS[0]
    model, scenario = upstream.scenario(ByKey({refused: REFUSED}, OK))
    for _ in range(8):
        assert chat(pooled, "refuse", model).status_code == 200
    used = keys_used(scenario)
    assert used.count(refused) == 1 and len(used) == 9
    assert {*used} == {*REFUSE_KEYS}  # the others share the load
    disabled = {"provider": "refuse", "state": "disabled"}
    assert metric(pooled, "aibridge_upstream_key_transitions_total", **disabled) == 1
    client = redis.Redis.from_url(redis_url)
    try:
        state = client.hgetall(f"{pooled.prefix}key-pool:refuse")
    finally:
        client.close()
    assert state[fingerprint(refused).encode()] == b"disabled"
    stored = b" ".join([*state, *state.values()])
    assert not any(key.encode() in stored for key in REFUSE_KEYS)  # fingerprints only
    output = pooled.output()
    assert refused not in output and "sk-...1111" in output  # the log names the key by its hint


def test_every_key_cooling_is_the_familys_429_with_the_soonest_return(pooled, upstream):
    soon, later = COOL_KEYS  # no Retry-After: the default cooldown; retry-after-ms: 30 s
    model, scenario = upstream.scenario(
        ByKey({soon: rate_limited(), later: rate_limited(**{"retry-after-ms": "30000"})}, OK)
    )
    client = anthropic.Anthropic(base_url=f"{pooled.url}/cool", api_key="unused", max_retries=0)
    for asked in (2, 2):  # the second request is refused before any upstream call
        with pytest.raises(anthropic.RateLimitError) as refused:
            client.messages.create(model=model, max_tokens=10, messages=HI)
        assert refused.value.response.headers["retry-after"] == str(COOLDOWN)  # 8.9x s, rounded up
        assert refused.value.body["error"]["type"] == "rate_limit_error"
        assert "every upstream key of provider 'cool' is rate limited" in refused.value.message
        assert len(scenario.received) == asked
    exhausted = {"provider": "cool", "status": "429"}
    assert metric(pooled, "aibridge_upstream_key_exhaustions_total", **exhausted) == 2


def test_every_key_refused_is_a_503_without_retry_after(pooled, upstream):
    model, scenario = upstream.scenario(REFUSED)
    client = openai.OpenAI(base_url=f"{pooled.url}/dead/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.InternalServerError) as refused:
        client.chat.completions.create(model=model, messages=HI)
    assert refused.value.status_code == 503 and "retry-after" not in refused.value.response.headers
    assert refused.value.code == "upstream_keys_disabled"
    assert sorted(keys_used(scenario)) == DEAD_KEYS


def test_the_clients_own_key_bypasses_the_pool(pooled, upstream):
    own = "sk-own-key-of-the-client-7777"
    model, scenario = upstream.scenario(REFUSED)
    client = openai.OpenAI(
        base_url=f"{pooled.url}/byok/v1",
        api_key="unused",
        max_retries=0,
        default_headers={"X-Upstream-Authorization": f"Bearer {own}"},
    )
    with pytest.raises(openai.AuthenticationError):  # the upstream's own 401: the client's key is at fault
        client.chat.completions.create(model=model, messages=HI)
    assert keys_used(scenario) == [own]
    disabled = {"provider": "byok", "state": "disabled"}
    assert metric(pooled, "aibridge_upstream_key_transitions_total", **disabled) == 0
