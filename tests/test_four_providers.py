"""One deployment with providers of four types, each mounted under its name: an OpenAI-compatible server
(``vllm``), Anthropic, GitHub Copilot and AWS Bedrock. Each answers its SDK through the gateway with its own
credentials, and the usage records tell them apart."""

from __future__ import annotations

import time

import anthropic
import httpx2
import openai
import orjson
import pytest
from cryptography.fernet import Fernet

from tests.anthropic_upstream import message_events, sse_reply
from tests.fake_bedrock import Answer, FakeBedrock
from tests.fake_upstream import SSEReply, text_stream

KEY_ID, SECRET = "AKIAFOURPROVIDERS", "four-providers-secret"
COPILOT_TOKEN = "ghu_four_providers_token"
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def bedrock():
    fake = FakeBedrock(credentials={KEY_ID: (SECRET, None)}).start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def deployment(make_gateway_module, upstream, bedrock):
    configured = [
        {"name": "vllm", "type": "openai", "base_url": upstream.base_url, "keys": ["sk-vllm-1"]},
        {
            "name": "claude",
            "type": "anthropic",
            "base_url": upstream.base_url.removesuffix("/v1"),
            "keys": ["sk-ant-2"],
        },
        {"name": "copilot", "type": "copilot", "base_url": upstream.base_url.removesuffix("/v1")},
        {
            "name": "aws",
            "type": "bedrock",
            "region": bedrock.region,
            "base_url": bedrock.url,
            "access_key_id": KEY_ID,
            "secret_access_key": SECRET,
        },
    ]
    return make_gateway_module(
        AIBRIDGE_PROVIDERS=orjson.dumps(configured).decode(),
        AIBRIDGE_SECRET_KEY=Fernet.generate_key().decode(),
    )


def usage_by_provider(deployment, providers: set[str], timeout: float = 15) -> dict[str, int]:
    """Interceptions per provider in /api/v1/usage, once every one of ``providers`` has its records."""
    deadline = time.monotonic() + timeout
    while True:
        rows = httpx2.get(f"{deployment.url}/api/v1/usage", params={"by": "provider"}).json()["data"]
        counts = {row["provider"]: row["interceptions"] for row in rows}
        if providers <= counts.keys() or time.monotonic() > deadline:
            return counts
        time.sleep(0.1)


def test_four_providers_of_four_types_each_answer_through_the_gateway(deployment, upstream, bedrock):
    model, vllm = upstream.scenario(SSEReply(text_stream(["from ", "vllm"])))
    sdk = openai.OpenAI(base_url=f"{deployment.url}/vllm/v1", api_key="unused", max_retries=0)
    chunks = sdk.chat.completions.create(model=model, messages=HI, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "from vllm"
    assert vllm.received[0].headers["Authorization"] == "Bearer sk-vllm-1"

    model, claude = upstream.scenario(sse_reply(message_events("from claude")))
    messages = anthropic.Anthropic(base_url=f"{deployment.url}/claude", api_key="unused", max_retries=0)
    with messages.messages.stream(model=model, max_tokens=16, messages=HI) as stream:
        assert stream.get_final_text() == "from claude"
    assert claude.received[0].headers["x-api-key"] == "sk-ant-2"

    model, copilot = upstream.scenario(SSEReply(text_stream(["from ", "copilot"])))
    sdk = openai.OpenAI(base_url=f"{deployment.url}/copilot", api_key=COPILOT_TOKEN, max_retries=0)
    chunks = sdk.chat.completions.create(model=model, messages=HI, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "from copilot"
    assert copilot.received[0].path == "/chat/completions"
    assert copilot.received[0].headers["Authorization"] == f"Bearer {COPILOT_TOKEN}"

    model = bedrock.model(Answer("from bedrock"))
    messages = anthropic.Anthropic(base_url=f"{deployment.url}/aws", api_key="unused", max_retries=0)
    with messages.messages.stream(model=model, max_tokens=16, messages=HI) as stream:
        assert stream.get_final_text() == "from bedrock"

    counts = usage_by_provider(deployment, {"vllm", "claude", "copilot", "aws"})
    assert {name: counts.get(name) for name in ("vllm", "claude", "copilot", "aws")} == {
        "vllm": 1,
        "claude": 1,
        "copilot": 1,
        "aws": 1,
    }


def test_the_defaults_stay_where_they_were_beside_the_named_providers(deployment, upstream):
    model, scenario = upstream.scenario(SSEReply(text_stream(["default"])))
    sdk = openai.OpenAI(base_url=f"{deployment.url}/openai/v1", api_key="unused", max_retries=0)
    chunks = sdk.chat.completions.create(model=model, messages=HI, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "default"
    assert scenario.received[0].headers["Authorization"] == "Bearer sk-upstream-test-key"
    unknown = httpx2.post(
        f"{deployment.url}/azure/v1/chat/completions", json={"model": model, "messages": HI}
    )
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"
