"""Blocking (``stream`` false or absent) requests take the same queue path and come back as one JSON body."""

from __future__ import annotations

import httpx2
import openai
import orjson
import pytest

from tests.fake_upstream import RawReply

HI = [{"role": "user", "content": "hi"}]


def completion(content: str) -> bytes:
    return orjson.dumps(
        {
            "id": "chatcmpl-blocking",
            "object": "chat.completion",
            "created": 1,
            "model": "gpt-test",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
            "x_unknown": [1, 2],
        }
    )


def test_blocking_completion_has_the_interception_id_and_everything_else_as_sent(gateway, upstream):
    upstream_body = completion("Hello there")
    model, scenario = upstream.scenario(RawReply(200, upstream_body))
    response = httpx2.post(
        f"{gateway.base_url}/chat/completions", json={"model": model, "messages": HI}, timeout=10
    )
    assert response.status_code == 200
    interception_id = response.headers["X-AIBridge-Interception-Id"]
    assert response.content == upstream_body.replace(b"chatcmpl-blocking", interception_id.encode())
    assert scenario.received[0].body == {"model": model, "messages": HI}


def test_blocking_through_the_sdk(gateway, upstream):
    model, _ = upstream.scenario(RawReply(200, completion("Hello there")))
    result = gateway.client().chat.completions.create(model=model, messages=HI)
    assert result.choices[0].message.content == "Hello there"
    assert result.usage.total_tokens == 7
    assert result.id != "chatcmpl-blocking"


def test_blocking_upstream_error_keeps_status_and_body(gateway, upstream):
    error = b'{"error": {"message": "bad key", "type": "invalid_request_error", "code": "invalid_api_key"}}'
    model, _ = upstream.scenario(RawReply(401, error))
    with pytest.raises(openai.AuthenticationError) as caught:
        gateway.client().chat.completions.create(model=model, messages=HI)
    assert caught.value.status_code == 401
    assert caught.value.response.content == error


def test_blocking_upstream_non_json_error_becomes_openai_shaped(gateway, upstream):
    model, _ = upstream.scenario(
        RawReply(502, b"<html>bad gateway</html>", headers={"Content-Type": "text/html"})
    )
    response = httpx2.post(
        f"{gateway.base_url}/chat/completions", json={"model": model, "messages": HI}, timeout=10
    )
    assert response.status_code == 502
    error = response.json()["error"]
    assert "bad gateway" in error["message"]
    assert set(error) == {"message", "type", "code"}
