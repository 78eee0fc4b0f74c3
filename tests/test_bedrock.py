"""Bedrock providers through the real gateway, against a fake Bedrock that checks every SigV4 signature: the
anthropic SDK streams and creates messages on /<name>/v1/messages with static keys, the default credential
chain and an assumed role; a wrong secret is Anthropic's 403; an exception frame is Anthropic's error event."""

from __future__ import annotations

import anthropic
import httpx2
import orjson
import pytest

from tests.fake_bedrock import Answer, FakeBedrock
from tests.test_recording import recorded

KEY_ID, SECRET = "AKIASTATICEXAMPLE", "static-secret"
CHAIN_KEY_ID, CHAIN_SECRET = "AKIACHAINEXAMPLE", "chain-secret"
ROLE = "arn:aws:iam::123456789012:role/bedrock-caller"
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def bedrock():
    fake = FakeBedrock(credentials={KEY_ID: (SECRET, None), CHAIN_KEY_ID: (CHAIN_SECRET, None)}).start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def mapped(bedrock: FakeBedrock) -> str:
    return bedrock.model(Answer("mapped answer"))


@pytest.fixture(scope="module")
def gateway(make_gateway_module, bedrock: FakeBedrock, mapped: str, tmp_path_factory):
    common = {"type": "bedrock", "region": bedrock.region, "base_url": bedrock.url}
    static = {"access_key_id": KEY_ID, "secret_access_key": SECRET}
    configured = [
        {"name": "bedrock", **common, **static, "models": {"claude-mapped": mapped}},
        {"name": "bedrock-wrong", **common, **static, "secret_access_key": "not-the-secret"},
        {"name": "bedrock-chain", **common},
        {"name": "bedrock-role", **common, "role_arn": ROLE},
    ]
    nowhere = str(tmp_path_factory.mktemp("aws") / "none")
    return make_gateway_module(
        AIBRIDGE_PROVIDERS=orjson.dumps(configured).decode(),
        AWS_ACCESS_KEY_ID=CHAIN_KEY_ID,  # the default chain's first source: the environment
        AWS_SECRET_ACCESS_KEY=CHAIN_SECRET,
        AWS_ENDPOINT_URL_STS=bedrock.url,
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=nowhere,
        AWS_SHARED_CREDENTIALS_FILE=nowhere,
    )


def client(gateway, name: str = "bedrock") -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=f"{gateway.url}/{name}", api_key="unused", max_retries=0)


def test_the_sdk_streams_a_message_signed_with_static_keys(gateway, bedrock):
    model = bedrock.model(Answer("streamed from Bedrock"))
    with client(gateway).messages.stream(
        model=model, max_tokens=64, messages=HI, extra_headers={"anthropic-beta": "a-1, b-2"}
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
        interception = stream.response.headers["x-aibridge-interception-id"]
    assert text == "streamed from Bedrock" and final.stop_reason == "end_turn"
    (sent,) = [each for each in bedrock.received if model.split(":")[0] in each.path]
    assert sent.path == f"/model/{model.replace(':', '%3A')}/invoke-with-response-stream"
    assert sent.access_key == KEY_ID
    assert "model" not in sent.body and "stream" not in sent.body
    assert sent.body["anthropic_version"] == "bedrock-2023-05-31"
    assert sent.body["anthropic_beta"] == ["a-1", "b-2"] and sent.body["messages"] == HI
    assert "anthropic-version" not in {name.lower() for name in sent.headers}
    assert recorded(gateway, interception)["provider"] == "bedrock"


def test_the_sdk_creates_a_message_under_a_mapped_model_name(gateway, bedrock, mapped):
    answer = client(gateway).messages.with_raw_response.create(
        model="claude-mapped", max_tokens=64, messages=HI
    )
    message = answer.parse()
    assert [block.text for block in message.content] == ["mapped answer"]
    assert bedrock.received[-1].path == f"/model/{mapped.replace(':', '%3A')}/invoke"
    record = recorded(gateway, answer.headers["x-aibridge-interception-id"])
    assert (record["provider"], record["model"]) == ("bedrock", "claude-mapped")


@pytest.mark.parametrize("streaming", [False, True])
def test_a_wrong_secret_key_is_anthropics_permission_error(gateway, bedrock, streaming):
    model = bedrock.model(Answer("never"))
    body = {"model": model, "max_tokens": 64, "messages": HI, "stream": streaming}
    answer = httpx2.post(f"{gateway.url}/bedrock-wrong/v1/messages", json=body, timeout=30)
    assert answer.status_code == 403
    error = answer.json()
    assert error["type"] == "error" and error["error"]["type"] == "permission_error"
    assert "signature" in error["error"]["message"]


def test_an_exception_frame_mid_stream_is_anthropics_error_event(gateway, bedrock):
    model = bedrock.model(Answer("cut short", fail_after=3))
    body = {"model": model, "max_tokens": 64, "messages": HI, "stream": True}
    answer = httpx2.post(f"{gateway.url}/bedrock/v1/messages", json=body, timeout=30)
    assert answer.status_code == 200
    events = [
        line.removeprefix(b"event: ") for line in answer.content.split(b"\n") if line.startswith(b"event: ")
    ]
    assert events == [b"message_start", b"content_block_start", b"content_block_delta", b"error"]
    last = [line for line in answer.content.split(b"\n") if line.startswith(b"data: ")][-1]
    assert orjson.loads(last[6:]) == {
        "type": "error",
        "error": {
            "type": "rate_limit_error",
            "message": "Bedrock throttlingException: Too many tokens, please wait before trying again.",
        },
    }


def test_the_default_chain_and_an_assumed_role_sign_too(gateway, bedrock):
    model = bedrock.model(Answer("signed"))
    for name in ("bedrock-chain", "bedrock-role"):
        message = client(gateway, name).messages.create(model=model, max_tokens=64, messages=HI)
        assert [block.text for block in message.content] == ["signed"]
    chain, role = [each.access_key for each in bedrock.received if model.split(":")[0] in each.path]
    assert chain == CHAIN_KEY_ID
    assert role.startswith("ASIA")  # the STS answer's temporary key
    (assumed,) = bedrock.assumed
    assert assumed["Action"] == ["AssumeRole"] and assumed["RoleArn"] == [ROLE]


def test_routes_bedrock_has_no_equivalent_of_are_501_in_anthropics_shape(gateway):
    answer = httpx2.post(f"{gateway.url}/bedrock/v1/messages/count_tokens", json={}, timeout=10)
    assert answer.status_code == 501
    assert answer.json()["type"] == "error" and "Bedrock" in answer.json()["error"]["message"]
    assert httpx2.get(f"{gateway.url}/bedrock/v1/models", timeout=10).status_code == 501
