"""A gateway without an upstream key: an empty AIBRIDGE_OPENAI_API_KEY (what compose makes of an unset one)
is no key, the worker says so at start, and the 401 the upstream then answers tells the client why."""

from __future__ import annotations

import os

import openai
import pytest
from cryptography.fernet import Fernet

from shared.config import Settings, load_settings
from shared.local import free_port
from shared.upstream import missing_key_warning
from tests.fake_upstream import RawReply, SSEReply, text_stream
from tests.local_up import LocalUp

HI = [{"role": "user", "content": "hi"}]
WARNING = "no upstream key configured"
UPSTREAM_401 = (
    b'{"error": {"message": "You didn\'t provide an API key.", "type": "invalid_request_error", '
    b'"code": "invalid_api_key"}}'
)


@pytest.fixture(scope="module")
def keyless(make_gateway_module):
    return make_gateway_module(AIBRIDGE_OPENAI_API_KEY="", AIBRIDGE_SECRET_KEY=Fernet.generate_key().decode())


def unauthorized(upstream) -> str:
    model, _ = upstream.scenario(RawReply(401, UPSTREAM_401))
    return model


def test_an_empty_key_sends_no_authorization_header(keyless, upstream):
    model, scenario = upstream.scenario(SSEReply(text_stream(["ok"])))
    list(keyless.client().chat.completions.create(model=model, messages=HI, stream=True))
    assert not [name for name in scenario.received[0].headers if name.lower() == "authorization"]


def test_empty_secret_settings_are_unset(monkeypatch):
    monkeypatch.setenv("AIBRIDGE_OPENAI_API_KEY", "")
    monkeypatch.setenv("AIBRIDGE_SECRET_KEY", " ")
    settings = load_settings()
    assert (settings.openai_api_key, settings.secret_key) == (None, None)


def test_the_worker_says_once_at_start_that_it_has_no_upstream_key(keyless):
    keyless.wait_until(lambda: WARNING in keyless.output(), "the worker's warning")
    (line,) = [line for line in keyless.output().splitlines() if WARNING in line]
    assert "AIBRIDGE_OPENAI_API_KEY" in line and "without credentials" in line
    assert missing_key_warning(Settings(openai_api_key="sk-configured", anthropic_api_key="sk-ant")) is None


@pytest.mark.parametrize("streaming", [True, False])
def test_a_401_says_the_gateway_has_no_upstream_key_unless_the_request_brought_one(
    keyless, upstream, streaming
):
    with pytest.raises(openai.AuthenticationError) as caught:
        keyless.client().chat.completions.create(model=unauthorized(upstream), messages=HI, stream=streaming)
    error = caught.value.body
    assert "no upstream key configured (AIBRIDGE_OPENAI_API_KEY)" in error["message"]
    assert error["message"].endswith("the upstream said: You didn't provide an API key.")
    assert (error["type"], error["code"]) == ("invalid_request_error", "invalid_api_key")

    own_key = keyless.client(default_headers={"X-Upstream-Authorization": "Bearer sk-clients-own"})
    with pytest.raises(openai.AuthenticationError) as caught:
        own_key.chat.completions.create(model=unauthorized(upstream), messages=HI, stream=streaming)
    assert caught.value.body["message"] == "You didn't provide an API key."


def test_aibridge_up_without_a_key_says_so_in_one_line(redis_url, upstream, tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "AIBRIDGE_REDIS_URL": redis_url,
        "AIBRIDGE_KEY_PREFIX": f"up-{port}:",
        "AIBRIDGE_OPENAI_BASE_URL": upstream.base_url,
        "AIBRIDGE_OPENAI_API_KEY": "",
        "AIBRIDGE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'records.db'}",
    }
    with LocalUp(env, port) as up:
        up.wait_ready()
        up.stop()
    assert len([line for line in up.output.splitlines() if WARNING in line]) == 1, up.output
