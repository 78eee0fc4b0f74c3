"""The circuit breaker shared by every API instance and worker (shared/breaker.py): what counts as a failure,
its state machine on a real Redis, and a deployment of two API instances and two workers that trip it, refuse
while it is open, probe it and close it again."""

from __future__ import annotations

import time
import uuid

import httpx2
import openai
import pytest
import redis

from api.jobs import ENQUEUE_SCRIPT
from shared.breaker import REPORT_SCRIPT, BreakerSettings, outcome_of, report
from shared.upstream import GatewayFailure, UpstreamCut, UpstreamFailure
from tests.fake_upstream import RawReply, completion_body

OVERLOADED = b'{"error": {"message": "overloaded", "type": "server_error", "code": null}}'
SETTINGS = BreakerSettings(threshold=3, window=5.0, open_for=0.3, probes=2)


@pytest.mark.parametrize(
    ("failure", "outcome"),
    [
        (None, "ok"),
        (UpstreamFailure(503, b""), "fail"),
        (UpstreamFailure(504, b""), "fail"),
        (UpstreamFailure(529, b""), "fail"),
        (UpstreamFailure(500, b""), "ok"),  # the provider answered: an error of its own, not an overload
        (UpstreamFailure(400, b""), "ok"),
        (UpstreamFailure(429, b""), None),  # one key's limit: the key pool's business
        (GatewayFailure(502, "unreachable", "upstream_unreachable"), "fail"),
        (GatewayFailure(504, "slow", "upstream_timeout"), "fail"),
        (UpstreamCut(502, "cut", "upstream_connection_lost"), None),
    ],
)
def test_what_an_upstream_call_says_of_its_provider(failure, outcome):
    assert outcome_of(failure) == outcome


@pytest.fixture
def circuit(redis_url):
    client = redis.Redis.from_url(redis_url)
    key = f"test-circuit:{uuid.uuid4().hex}"
    yield client, key
    client.delete(key)
    client.close()


def reported(client: redis.Redis, key: str, outcome: str) -> tuple[str, bool]:
    command = report(key, outcome, SETTINGS)
    state, opened = client.execute_command(*command)
    assert command[1] == REPORT_SCRIPT
    return state.decode(), opened == b"1"


def admitted(client: redis.Redis, key: str) -> tuple[bool, int]:
    """Whether the enqueue script's circuit check lets a request of the circuit ``key`` through."""
    job = f"test-job:{uuid.uuid4().hex}"
    keys = [job, f"{job}:queue", f"{job}:pending", f"{job}:slots", f"{job}:rpm", f"{job}:owner", key]
    args = [b"{}", 1000, 1, job, 0, 0, int(time.time() * 1000), 1000, 0, "", 1000, SETTINGS.probes, 300]
    verdict, value = client.eval(ENQUEUE_SCRIPT, len(keys), *keys, *args)
    client.delete(*keys[:6])
    return verdict == b"ok", value


def test_consecutive_failures_open_it_and_a_success_between_them_resets_the_count(circuit):
    client, key = circuit
    assert reported(client, key, "fail") == ("closed", False)
    assert reported(client, key, "fail") == ("closed", False)
    assert reported(client, key, "ok") == ("closed", False)
    assert not client.exists(key)  # a success forgets the failures
    assert [reported(client, key, "fail") for _ in range(3)][-1] == ("open", True)
    assert admitted(client, key)[0] is False
    assert reported(client, key, "fail") == ("open", False)  # open already: no second trip


def test_after_its_open_time_it_lets_the_probes_through_and_closes_when_they_pass(circuit):
    client, key = circuit
    for _ in range(3):
        reported(client, key, "fail")
    refused, retry_ms = admitted(client, key)
    assert refused is False and 0 < retry_ms <= 300
    deadline = time.monotonic() + 2
    while not admitted(client, key)[0]:  # the first probe, once the open time has passed
        assert time.monotonic() < deadline, "the circuit never half-opened"
    assert admitted(client, key)[0] is True  # the second probe
    assert admitted(client, key) == (False, 1000)  # no more until they report
    assert reported(client, key, "ok") == ("half_open", False)
    assert reported(client, key, "ok") == ("closed", False)
    assert admitted(client, key)[0] is True and not client.exists(key)


def test_a_failing_probe_opens_it_again(circuit):
    client, key = circuit
    for _ in range(3):
        reported(client, key, "fail")
    deadline = time.monotonic() + 2
    while not admitted(client, key)[0]:
        assert time.monotonic() < deadline, "the circuit never half-opened"
    assert reported(client, key, "fail") == ("open", True)
    assert admitted(client, key)[0] is False


def chat(url: str, model: str) -> httpx2.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    return httpx2.post(f"{url}/openai/v1/chat/completions", json=body, timeout=30)


def test_two_api_instances_and_two_workers_share_one_circuit(make_gateway, upstream):
    ok = RawReply(200, completion_body("fine"))
    model, scenario = upstream.scenario(*[RawReply(503, OVERLOADED)] * 5, ok)
    deployment = make_gateway(
        workers=2,
        AIBRIDGE_CIRCUIT_OPEN_TIME="1",
        AIBRIDGE_CIRCUIT_PROBES="2",
        AIBRIDGE_CIRCUIT_FAILURE_WINDOW="30",
    )
    other_url, _ = deployment.add_api()
    urls = [deployment.url, other_url]
    for n in range(5):  # both instances, both workers: five overload answers in a row
        assert chat(urls[n % 2], model).status_code == 503
    assert len(scenario.received) == 5
    for url in urls:  # open for every instance at once, refused before queueing
        refused = chat(url, model)
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "circuit_open"
        assert 1 <= int(refused.headers["retry-after"]) <= 1
    sdk = openai.OpenAI(base_url=f"{other_url}/openai/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.InternalServerError) as raised:
        sdk.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    assert raised.value.status_code == 503 and raised.value.body["code"] == "circuit_open"
    assert len(scenario.received) == 5  # the provider got none of them
    deadline = time.monotonic() + 5
    while (answer := chat(urls[0], model)).status_code != 200:  # the first probe, once it half-opened
        assert answer.json()["error"]["code"] == "circuit_open"
        assert time.monotonic() < deadline, "the circuit never let a probe through"
    assert chat(urls[1], model).status_code == 200  # the second probe passes: closed
    assert all(chat(url, model).status_code == 200 for url in urls * 2)
    rejects = httpx2.get(f"{deployment.url}/metrics").text
    assert 'aibridge_circuit_rejects_total{family="openai_chat",provider="openai"}' in rejects
