"""AIBRIDGE_SEND_ACTOR_HEADERS: upstream requests carry the actor as the reference names the headers."""

from __future__ import annotations

import httpx2

from tests.fake_upstream import RawReply, SSEReply, completion_body, text_stream

HI = [{"role": "user", "content": "hi"}]


def test_upstream_requests_carry_the_actor_id_and_metadata(make_gateway, upstream):
    deployment = make_gateway(AIBRIDGE_AUTH="keys", AIBRIDGE_SEND_ACTOR_HEADERS="true")
    key = deployment.create_key("user-123", Username="alice", Team="core")
    model, scenario = upstream.scenario(SSEReply(text_stream(["ok"])), RawReply(200, completion_body("ok")))
    for stream in (True, False):
        response = httpx2.post(
            f"{deployment.base_url}/chat/completions",
            json={"model": model, "messages": HI, "stream": stream},
            headers={
                "Authorization": f"Bearer {key}",
                "X-AI-Bridge-Actor-ID": "spoofed",  # what the client says is not what the upstream hears
            },
            timeout=20,
        )
        assert response.status_code == 200, response.text
    assert len(scenario.received) == 2
    for received in scenario.received:
        headers = {name.lower(): value for name, value in received.headers.items()}
        assert headers["x-ai-bridge-actor-id"] == "user-123"
        assert headers["x-ai-bridge-actor-metadata-username"] == "alice"
        assert headers["x-ai-bridge-actor-metadata-team"] == "core"
        assert headers["authorization"] == "Bearer sk-upstream-test-key"
        assert key not in received.headers.values()
