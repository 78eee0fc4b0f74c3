"""A GitHub Copilot provider: chat completions, Responses and Messages under ``/<name>/``, every request with
the user's own Copilot token in ``Authorization`` and, with gateway keys, the gateway key in ``X-Api-Key``;
the fake upstream stands for api.githubcopilot.com (its paths without /v1), the official SDKs are the clients."""

from __future__ import annotations

import anthropic
import httpx2
import openai
import orjson
import pytest
from cryptography.fernet import Fernet

from tests.anthropic_upstream import message_events, sse_reply
from tests.fake_upstream import RawReply, SSEReply, completion_body, text_stream
from tests.responses_events import TEXT, USAGE, as_sse, response_events

TOKEN = "ghu_copilot_user_token_0123456789"
COPILOT_HEADERS = {"Copilot-Integration-Id": "vscode-chat", "Editor-Version": "vscode/1.99.0"}
HI = [{"role": "user", "content": "hi"}]
MESSAGE = {
    "id": "msg_c1",
    "type": "message",
    "role": "assistant",
    "model": "claude",
    "content": [{"type": "text", "text": "hello"}],
    "stop_reason": "end_turn",
    "usage": {"input_tokens": 3, "output_tokens": 1},
}


@pytest.fixture(scope="module")
def copilot(make_gateway_module, upstream):
    providers = [{"name": "copilot", "type": "copilot", "base_url": upstream.base_url.removesuffix("/v1")}]
    deployment = make_gateway_module(
        AIBRIDGE_AUTH="keys",
        AIBRIDGE_SECRET_KEY=Fernet.generate_key().decode(),
        AIBRIDGE_PROVIDERS=orjson.dumps(providers).decode(),
    )
    return deployment, deployment.create_key("cora")


def upstream_saw_only_the_users_token(received, client_key: str) -> None:
    headers = {name.lower(): value for name, value in received.headers.items()}
    assert headers["authorization"] == f"Bearer {TOKEN}"
    assert headers["copilot-integration-id"] == "vscode-chat" and headers["editor-version"] == "vscode/1.99.0"
    assert client_key not in orjson.dumps(headers).decode() and "x-api-key" not in headers


def test_chat_and_responses_go_to_copilot_with_the_users_token(copilot, upstream):
    deployment, client_key = copilot
    sdk = openai.OpenAI(
        base_url=f"{deployment.url}/copilot",
        api_key=TOKEN,
        default_headers={"X-Api-Key": client_key, **COPILOT_HEADERS},
        max_retries=0,
    )
    model, chat = upstream.scenario(
        SSEReply(text_stream(["hel", "lo"])), RawReply(200, completion_body("hi"))
    )
    streamed = sdk.chat.completions.create(model=model, messages=HI, stream=True)
    assert "".join(chunk.choices[0].delta.content or "" for chunk in streamed if chunk.choices) == "hello"
    assert sdk.chat.completions.create(model=model, messages=HI).choices[0].message.content == "hi"
    assert [received.path for received in chat.received] == ["/chat/completions"] * 2
    for received in chat.received:
        upstream_saw_only_the_users_token(received, client_key)
    model, responses = upstream.scenario(sse_reply(as_sse(response_events("resp_c1", [TEXT], 0, USAGE))))
    with sdk.responses.stream(model=model, input="hi") as stream:
        assert stream.get_final_response().output_text == "ok"
    (received,) = responses.received
    assert received.path == "/responses"
    upstream_saw_only_the_users_token(received, client_key)
    upstream.models_reply = RawReply(200, b'{"object": "list", "data": []}')  # other tests set theirs
    assert sdk.models.list().data == []  # passed through, with the user's token too
    upstream_saw_only_the_users_token(upstream.models_requests[-1], client_key)
    assert upstream.models_requests[-1].path == "/models"


def test_messages_go_to_copilot_with_the_users_token(copilot, upstream):
    deployment, client_key = copilot
    model, scenario = upstream.scenario(
        RawReply(200, orjson.dumps(MESSAGE)), sse_reply(message_events("hello"))
    )
    sdk = anthropic.Anthropic(
        base_url=f"{deployment.url}/copilot",
        auth_token=TOKEN,  # Authorization: Bearer (the SDK takes one credential: the gateway key as a header)
        default_headers={"X-Api-Key": client_key, **COPILOT_HEADERS},
        max_retries=0,
    )
    answer = sdk.messages.create(model=model, max_tokens=16, messages=HI)
    assert answer.content[0].text == "hello"
    with sdk.messages.stream(model=model, max_tokens=16, messages=HI) as stream:
        assert stream.get_final_text() == "hello"
    assert [received.path for received in scenario.received] == ["/v1/messages"] * 2
    for received in scenario.received:
        upstream_saw_only_the_users_token(received, client_key)


def test_a_request_without_the_users_token_is_refused_in_its_familys_shape(copilot):
    deployment, client_key = copilot
    chat = httpx2.post(
        f"{deployment.url}/copilot/chat/completions",
        json={"model": "m", "messages": HI},
        headers={"X-Api-Key": client_key},
    )
    assert chat.status_code == 401 and chat.json()["error"]["code"] == "missing_provider_token"
    messages = httpx2.post(
        f"{deployment.url}/copilot/v1/messages",
        json={"model": "m", "max_tokens": 8, "messages": HI},
        headers={"X-Api-Key": client_key},
    )
    assert messages.status_code == 401 and messages.json()["type"] == "error"
    assert "Copilot token" in messages.json()["error"]["message"]


def test_the_gateway_key_goes_in_x_api_key_when_authorization_is_the_users_token(copilot):
    deployment, _ = copilot
    answer = httpx2.post(
        f"{deployment.url}/copilot/chat/completions",
        json={"model": "m", "messages": HI},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert answer.status_code == 401 and "X-Api-Key" in answer.json()["error"]["message"]
