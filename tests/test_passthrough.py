"""Passthrough routes (/openai/v1/models, /anthropic/v1/models, /anthropic/v1/messages/count_tokens): no
queue, the body streamed both ways, only allow-listed request headers go up, upstream errors come back in the
family's shape. Against the fake upstream, with the official SDKs as clients."""

from __future__ import annotations

import time
import uuid

import anthropic
import httpx2
import openai
import orjson
import pytest

from shared.local import free_port
from tests.fake_upstream import RawReply, SSEReply

NOT_FOUND = RawReply(404, b"Not Found", {"Content-Type": "text/plain"})


def claude(gateway, **kwargs) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=f"{gateway.url}/anthropic", api_key="client-key", max_retries=0, **kwargs
    )


def lower(headers: dict[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def test_anthropic_models_go_up_with_the_gateways_key_and_only_allowed_headers(gateway, upstream):
    listed = {
        "data": [
            {"type": "model", "id": "claude-x", "display_name": "X", "created_at": "2025-01-01T00:00:00Z"}
        ]
    }
    upstream.models_reply = RawReply(200, orjson.dumps({**listed, "has_more": False}))
    client = claude(gateway, default_headers={"anthropic-beta": "b1", "x-private": "secret", "cookie": "c=1"})
    assert [model.id for model in client.models.list()] == ["claude-x"]
    sent = lower(upstream.models_requests[-1].headers)
    assert sent["x-api-key"] == "sk-ant-upstream-test-key"  # the gateway's, not the client's
    assert sent["anthropic-beta"] == "b1" and sent["anthropic-version"]
    assert sent["user-agent"].startswith("Anthropic/Python")  # the client's, as on /v1/messages
    assert not {"x-private", "cookie", "authorization", "x-stainless-lang"} & set(sent)


def test_openai_models_get_the_bearer_key_and_a_text_404_becomes_openai_shaped(gateway, upstream):
    upstream.models_reply = NOT_FOUND
    with pytest.raises(openai.NotFoundError) as caught:
        gateway.client().models.list()
    assert caught.value.response.headers["content-type"] == "application/json"
    assert caught.value.response.json() == {
        "error": {"message": "upstream answered 404: Not Found", "type": "upstream_error", "code": None}
    }
    assert lower(upstream.models_requests[-1].headers)["authorization"] == "Bearer sk-upstream-test-key"


def test_a_model_unknown_upstream_is_a_not_found_in_each_familys_shape(gateway, upstream):
    name = f"nope-{uuid.uuid4().hex[:6]}"
    with pytest.raises(openai.NotFoundError) as caught:
        gateway.client().models.retrieve(name)
    assert caught.value.response.json()["error"]["message"] == "upstream answered 404: Not Found"
    assert upstream.passthrough_requests[-1].path == f"/v1/models/{name}"
    with pytest.raises(anthropic.NotFoundError) as caught:
        claude(gateway).models.retrieve(name)
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "not_found_error", "message": "upstream answered 404: Not Found"},
    }


def test_an_anthropic_shaped_upstream_error_is_relayed_as_is(gateway, upstream):
    name = f"limited-{uuid.uuid4().hex[:6]}"
    said = b'{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}'
    upstream.passthrough_replies[f"/v1/models/{name}"] = RawReply(
        429, said, {"Content-Type": "application/json", "retry-after": "7", "set-cookie": "a=b"}
    )
    with pytest.raises(anthropic.RateLimitError) as caught:
        claude(gateway).models.retrieve(name)
    assert caught.value.response.content == said
    assert caught.value.response.headers["retry-after"] == "7"
    assert "set-cookie" not in caught.value.response.headers


def test_count_tokens_streams_the_body_up(gateway, upstream):
    upstream.passthrough_replies["/v1/messages/count_tokens"] = RawReply(200, b'{"input_tokens": 7}')
    counted = claude(gateway).messages.count_tokens(
        model="claude-x", messages=[{"role": "user", "content": "hi"}]
    )
    assert counted.input_tokens == 7
    assert orjson.loads(upstream.passthrough_requests[-1].raw)["messages"] == [
        {"role": "user", "content": "hi"}
    ]
    first, second = b'{"model": "claude-x", ', b'"messages": []}'

    def parts():
        yield first
        deadline = time.monotonic() + 10  # the upstream has the first part before the client sends the rest
        while not (upstream.passthrough_requests and upstream.passthrough_requests[-1].raw == first):
            if time.monotonic() > deadline:
                raise TimeoutError("the first part never reached the upstream: the body was buffered")
            time.sleep(0.01)
        yield second

    response = httpx2.post(f"{gateway.url}/anthropic/v1/messages/count_tokens", content=parts(), timeout=20)
    assert response.status_code == 200
    assert upstream.passthrough_requests[-1].raw == first + second


def test_the_answer_streams_down_and_a_client_that_leaves_lets_the_upstream_go(gateway, upstream):
    name = f"slow-{uuid.uuid4().hex[:6]}"
    reply = SSEReply([b"one", b"two"], pause_after=1, pause=60)
    upstream.passthrough_replies[f"/v1/models/{name}"] = reply
    with httpx2.stream("GET", f"{gateway.url}/anthropic/v1/models/{name}", timeout=10) as response:
        assert response.headers["content-type"] == "text/event-stream"
        assert next(response.iter_raw()) == b"data: one\n\n"  # long before the upstream's pause ends
    received = upstream.passthrough_requests[-1]
    deadline = time.monotonic() + 10
    while received.connection_closed_at is None:
        assert time.monotonic() < deadline, "the upstream connection was kept after the client left"
        time.sleep(0.02)


def test_an_unreachable_upstream_is_an_anthropic_shaped_502(make_gateway):
    closed = make_gateway(
        workers=0, wait_ready=False, AIBRIDGE_ANTHROPIC_BASE_URL=f"http://127.0.0.1:{free_port()}"
    )
    with pytest.raises(anthropic.InternalServerError) as caught:
        claude(closed).models.list()
    assert caught.value.status_code == 502
    assert caught.value.body["type"] == "error"
    assert caught.value.body["error"]["type"] == "api_error"
    assert "unreachable" in caught.value.body["error"]["message"]
