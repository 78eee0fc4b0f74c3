"""The upstream's rate-limit and request-id headers reach the client (on a stream's 200, a blocking answer,
an error before the stream), and no other header of the upstream does."""

from __future__ import annotations

import openai
import pytest

from shared.messages import MessageKind, StreamMessage
from shared.relayed_headers import relayed_headers
from tests.fake_upstream import RawReply, SSEReply, completion_body, text_stream, tool_call_stream

HI = [{"role": "user", "content": "hi"}]
RELAYED = {
    "x-ratelimit-remaining-requests": "41",
    "x-ratelimit-reset-tokens": "6ms",
    "anthropic-ratelimit-requests-remaining": "9",
    "x-request-id": "req_abc123",
    "request-id": "req_def456",
    "openai-processing-ms": "12",
}
NOT_RELAYED = {
    "X-Upstream-Internal": "kept-upstream",
    "Set-Cookie": "session=upstream",
    "Content-Language": "fr",
}
JSON = {"Content-Type": "application/json"}
RATE_LIMITED = b'{"error": {"message": "slow down", "type": "requests", "code": "rate_limit_exceeded"}}'


def assert_relayed(headers) -> None:
    assert {name: headers.get(name) for name in RELAYED} == RELAYED
    assert not [name for name in NOT_RELAYED if name in headers]


def test_a_streamed_200_carries_the_upstreams_headers(gateway, upstream):
    model, _ = upstream.scenario(SSEReply(text_stream(["ok"]), headers={**RELAYED, **NOT_RELAYED}))
    raw = gateway.client().chat.completions.with_raw_response.create(model=model, messages=HI, stream=True)
    assert_relayed(raw.headers)
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert "".join(c.choices[0].delta.content or "" for c in raw.parse()) == "ok"


def test_a_tool_loops_200_carries_the_first_rounds_headers(tool_gateway, upstream):
    model, _ = upstream.scenario(
        SSEReply(tool_call_stream("bmcp_test_echo", '{"text": "x"}'), headers={**RELAYED, **NOT_RELAYED}),
        SSEReply(text_stream(["done"]), headers={"x-request-id": "req_second_round"}),
    )
    raw = tool_gateway.client().chat.completions.with_raw_response.create(
        model=model, messages=HI, stream=True
    )
    assert_relayed(raw.headers)
    assert "".join(c.choices[0].delta.content or "" for c in raw.parse()) == "done"


def test_a_blocking_200_carries_the_upstreams_headers(gateway, upstream):
    model, _ = upstream.scenario(RawReply(200, completion_body("ok"), {**JSON, **RELAYED, **NOT_RELAYED}))
    raw = gateway.client().chat.completions.with_raw_response.create(model=model, messages=HI)
    assert_relayed(raw.headers)
    assert raw.parse().choices[0].message.content == "ok"


@pytest.mark.parametrize("streaming", [True, False])
def test_an_upstream_429_reaches_the_sdk_with_its_retry_after(gateway, upstream, streaming):
    headers = {**JSON, "Retry-After": "7", "retry-after-ms": "7000", **RELAYED, **NOT_RELAYED}
    model, _ = upstream.scenario(RawReply(429, RATE_LIMITED, headers))
    with pytest.raises(openai.RateLimitError) as caught:
        gateway.client().chat.completions.create(model=model, messages=HI, stream=streaming)
    response_headers = caught.value.response.headers
    assert (response_headers["retry-after"], response_headers["retry-after-ms"]) == ("7", "7000")
    assert_relayed(response_headers)
    assert "slow down" in caught.value.message


def test_only_listed_printable_headers_are_kept_with_names_in_lower_case():
    upstream_headers = [
        ("Retry-After", "3"),
        ("X-RateLimit-Limit-Tokens", "1000"),
        ("Anthropic-RateLimit-Tokens-Reset", "2025-01-01T00:00:00Z"),
        ("Connection", "keep-alive"),
        ("Transfer-Encoding", "chunked"),
        ("Content-Length", "10"),
        ("X-Request-Id-Extra", "no"),
        ("X-Request-Id", "caf\u00e9"),  # not ASCII: left out rather than mangled
    ]
    assert relayed_headers(upstream_headers) == {
        "retry-after": "3",
        "x-ratelimit-limit-tokens": "1000",
        "anthropic-ratelimit-tokens-reset": "2025-01-01T00:00:00Z",
    }


def test_a_stream_messages_headers_survive_its_fields():
    message = StreamMessage(kind=MessageKind.OPEN, headers={"x-request-id": "req_1", "retry-after": "2"})
    assert StreamMessage.from_fields(message.to_fields()) == message
    assert b"h" not in StreamMessage(kind=MessageKind.OPEN).to_fields()  # nothing to carry: no field
