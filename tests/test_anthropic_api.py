"""What the API decides alone on /anthropic/v1/messages, seen through the official `anthropic` SDK: every
error answer of the gateway's own is Anthropic-shaped and maps to the SDK's exception type (on /openai the
same failures stay OpenAI-shaped), and an admitted request is queued as an Anthropic job. No worker runs:
where a test needs a worker's stream, the test writes the entries a worker writes (XADD) itself."""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import anthropic
import httpx2
import openai
import orjson
import pytest
import redis

from shared.keys import RedisKeys
from shared.messages import MessageKind, StreamMessage

HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def keyed(make_gateway_module):
    """Client keys on, one concurrent request per actor, no worker (a request waits 2 s, then 503)."""
    return make_gateway_module(
        workers=0,
        wait_ready=False,
        AIBRIDGE_AUTH="keys",
        AIBRIDGE_PICKUP_TIMEOUT="2",
        AIBRIDGE_MAX_CONCURRENT_PER_ACTOR="1",
        AIBRIDGE_MAX_BODY_BYTES="4096",
    )


def claude(gateway, api_key: str | None = None, **kwargs) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=f"{gateway.url}/anthropic", api_key=api_key, max_retries=0, **kwargs)


def assert_anthropic_error(body: object, error_type: str) -> None:
    assert isinstance(body, dict) and set(body) == {"type", "error"}, body
    assert body["type"] == "error"
    assert body["error"]["type"] == error_type
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


class Queue:
    """The jobs a deployment with no worker has queued; ``next_job`` waits for one queued after the last."""

    def __init__(self, gateway, redis_client: redis.Redis) -> None:
        self._redis = redis_client
        self._keys = RedisKeys(gateway.prefix)
        self._pending = self._keys.pending
        self._seen = self.waited = redis_client.llen(self._pending)  # jobs no worker takes stay listed

    def next_job(self, timeout: float = 2) -> dict:
        deadline = time.monotonic() + timeout
        while self._redis.llen(self._pending) <= self._seen:
            if time.monotonic() > deadline:
                raise TimeoutError("no job was queued")
            time.sleep(0.01)
        interception_id = self._redis.lindex(self._pending, self._seen)
        self._seen += 1
        return orjson.loads(self._redis.get(b"arq:job:" + interception_id))["a"][0]

    def act_as_worker(self, *messages: StreamMessage) -> None:
        """Take the next queued job and write ``messages`` to its stream, as a worker would."""
        key = self._keys.stream(self.next_job()["interception_id"])
        for message in messages:
            self._redis.execute_command("XADD", key, "*", *message.to_fields())

    def waiting(self) -> int:
        return self._redis.llen(self._pending)


def test_a_wrong_or_missing_key_is_an_authentication_error(keyed):
    with pytest.raises(anthropic.AuthenticationError) as caught:
        claude(keyed, "sk-wrong").messages.create(model="m", max_tokens=5, messages=HI)
    assert_anthropic_error(caught.value.body, "authentication_error")
    with pytest.raises(anthropic.AuthenticationError):  # Claude Code's ANTHROPIC_AUTH_TOKEN: a bearer token
        claude(keyed, auth_token="sk-wrong").messages.create(model="m", max_tokens=5, messages=HI)
    missing = httpx2.post(f"{keyed.url}/anthropic/v1/messages", json={}, timeout=10)
    assert missing.status_code == 401
    assert_anthropic_error(missing.json(), "authentication_error")
    assert "X-Api-Key" in missing.json()["error"]["message"]


def test_x_api_key_is_read_first_on_anthropic_routes(keyed):
    key = keyed.create_key("ann")
    headers = {"x-api-key": key, "authorization": "Bearer something-else"}
    response = httpx2.post(f"{keyed.url}/anthropic/v1/messages", content=b"[]", headers=headers, timeout=10)
    assert response.status_code == 400  # authenticated: the body is what is refused
    assert_anthropic_error(response.json(), "invalid_request_error")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"{not json", None),
        (b"[1]", None),
        (b'{"max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}', "model"),
        (b'{"model": "m", "max_tokens": 5, "messages": []}', "messages"),
        (b'{"model": "m", "max_tokens": 5, "messages": ["x"]}', "messages"),
        (b'{"model": "m", "messages": [{"role": "user", "content": "x"}]}', "max_tokens"),
        (b'{"model": "m", "max_tokens": "5", "messages": [{"role": "user", "content": "x"}]}', "max_tokens"),
        (b'{"model": "m", "max_tokens": true, "messages": [{"role": "user", "content": "x"}]}', "max_tokens"),
        (b'{"model": "m", "max_tokens": 5, "messages": [{}], "stream": "yes"}', "stream"),
        (b'{"model": "m", "max_tokens": 5, "messages": [{}], "tools": [1]}', "tools"),
        (b'{"model": "m", "max_tokens": 5, "messages": [{}], "system": 7}', "system"),
        (b'{"model": "m", "max_tokens": 5, "messages": [{}], "thinking": "on"}', "thinking"),
    ],
)
def test_a_bad_body_is_an_anthropic_400_and_nothing_is_queued(keyed, redis_client, body, field):
    key = keyed.create_key(f"bad-{uuid.uuid4().hex[:6]}")
    queue = Queue(keyed, redis_client)
    response = httpx2.post(
        f"{keyed.url}/anthropic/v1/messages", content=body, headers={"x-api-key": key}, timeout=10
    )
    assert response.status_code == 400
    assert_anthropic_error(response.json(), "invalid_request_error")
    if field is not None:
        assert f"'{field}'" in response.json()["error"]["message"]
    assert queue.waiting() == queue.waited


def test_our_errors_map_to_the_sdks_exception_types(keyed):
    client = claude(keyed, keyed.create_key("bo"))
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(model="", max_tokens=5, messages=HI)
    assert_anthropic_error(caught.value.body, "invalid_request_error")
    with pytest.raises(anthropic.ContentTooLargeError) as caught:
        client.messages.create(model="m", max_tokens=5, messages=[{"role": "user", "content": "x" * 5000}])
    assert_anthropic_error(caught.value.body, "request_too_large")
    with pytest.raises(anthropic.ContentTooLargeError) as caught:  # a passthrough route: before going up
        client.messages.count_tokens(model="m", messages=[{"role": "user", "content": "x" * 5000}])
    assert_anthropic_error(caught.value.body, "request_too_large")
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.get("/v1/no-such-route", cast_to=object)
    assert_anthropic_error(caught.value.body, "not_found_error")


def test_the_job_is_queued_as_anthropic_with_the_clients_headers_then_503_without_a_worker(
    keyed, redis_client
):
    key = keyed.create_key("cy")
    client = claude(keyed, key, default_headers={"anthropic-beta": "tools-2099", "x-other": "no"})
    queue = Queue(keyed, redis_client)
    with ThreadPoolExecutor(2) as pool:
        waiting = pool.submit(client.messages.create, model="claude-x", max_tokens=5, messages=HI)
        job = queue.next_job()
        with pytest.raises(anthropic.RateLimitError) as limited:  # one request at a time per actor
            client.messages.create(model="claude-x", max_tokens=5, messages=HI)
        with pytest.raises(anthropic.ServiceUnavailableError) as unavailable:
            waiting.result(timeout=20)
    assert_anthropic_error(limited.value.body, "rate_limit_error")
    assert_anthropic_error(unavailable.value.body, "overloaded_error")
    assert unavailable.value.response.headers["retry-after"]
    assert (job["family"], job["provider"], job["streaming"]) == ("anthropic_messages", "anthropic", False)
    assert job["body"] == {"model": "claude-x", "max_tokens": 5, "messages": HI}
    assert job["client_headers"]["anthropic-beta"] == "tools-2099"
    assert job["client_headers"]["anthropic-version"]  # the SDK sends its own
    assert job["client_headers"]["user-agent"].startswith("Anthropic/Python")
    assert set(job["client_headers"]) == {"anthropic-version", "anthropic-beta", "user-agent"}


def test_the_same_failures_stay_openai_shaped_on_openai_routes(keyed):
    client = openai.OpenAI(base_url=keyed.base_url, api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        client.chat.completions.create(model="m", messages=HI)
    assert caught.value.code == "invalid_api_key"
    client = openai.OpenAI(base_url=keyed.base_url, api_key=keyed.create_key("dee"), max_retries=0)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="", messages=HI)
    assert (caught.value.code, caught.value.param) == ("invalid_request", "model")
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="m", messages=HI)
    assert caught.value.status_code == 503 and caught.value.code == "no_worker_available"


def stream_in_thread(client: anthropic.Anthropic, caught: list[BaseException]) -> threading.Thread:
    def run() -> None:
        try:
            for _ in client.messages.create(model="m", max_tokens=5, messages=HI, stream=True):
                pass
        except BaseException as exc:
            caught.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_errors_after_the_stream_opened_are_anthropic_error_events(keyed, redis_client):
    client = claude(keyed, keyed.create_key("eve"))
    body = b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
    caught: list[BaseException] = []
    queue = Queue(keyed, redis_client)
    thread = stream_in_thread(client, caught)
    queue.act_as_worker(
        StreamMessage(kind=MessageKind.OPEN),
        StreamMessage(kind=MessageKind.ERROR, data=body, status=529),
        StreamMessage(kind=MessageKind.DONE),
    )
    thread.join(20)
    assert len(caught) == 1 and isinstance(caught[0], anthropic.APIStatusError), caught
    assert caught[0].body == orjson.loads(body)


def test_a_worker_silent_after_the_stream_opened_ends_it_with_an_anthropic_error_event(keyed, redis_client):
    client = claude(keyed, keyed.create_key("fay"))
    caught: list[BaseException] = []
    queue = Queue(keyed, redis_client)
    thread = stream_in_thread(client, caught)
    queue.act_as_worker(StreamMessage(kind=MessageKind.OPEN))
    thread.join(20)  # the heartbeat timeout is 3 s
    assert len(caught) == 1 and isinstance(caught[0], anthropic.APIStatusError), caught
    assert_anthropic_error(caught[0].body, "api_error")
    assert "lost contact with the worker" in caught[0].body["error"]["message"]


def test_a_full_queue_is_an_anthropic_overloaded_503(make_gateway, redis_client):
    full = make_gateway(
        workers=0, wait_ready=False, AIBRIDGE_MAX_QUEUE_DEPTH="1", AIBRIDGE_PICKUP_TIMEOUT="2"
    )
    client = claude(full, "client-key")
    queue = Queue(full, redis_client)
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(client.messages.create, model="m", max_tokens=5, messages=HI)
        queue.next_job()
        with pytest.raises(anthropic.ServiceUnavailableError) as caught:
            client.messages.create(model="m", max_tokens=5, messages=HI)
        with pytest.raises(anthropic.ServiceUnavailableError):
            waiting.result(timeout=20)
    assert_anthropic_error(caught.value.body, "overloaded_error")
    assert "overloaded" in caught.value.body["error"]["message"]
