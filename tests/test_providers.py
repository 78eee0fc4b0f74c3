"""Named providers: the defaults from their variables, the configured ones beside them, each type's routes
and key header, and the family whose shape the answers on a path take."""

from __future__ import annotations

import pytest

from shared.config import ConfigError, load_settings
from shared.families import Family
from shared.providers import RouteFamilies, provider, providers

VLLM = {"name": "vllm", "type": "openai", "base_url": "http://vllm:8000/v1/", "keys": ["sk-v1", "", "sk-v2"]}
CLAUDE = {
    "name": "claude-eu",
    "type": "anthropic",
    "base_url": "https://eu.example.com",
    "keys": ["sk-ant-eu"],
}


def test_the_defaults_come_first_and_the_configured_providers_after_them():
    settings = load_settings(openai_api_key="sk-openai", providers=[VLLM, CLAUDE])
    assert [(each.name, each.type) for each in providers(settings)] == [
        ("openai", "openai"),
        ("anthropic", "anthropic"),
        ("vllm", "openai"),
        ("claude-eu", "anthropic"),
    ]
    vllm = provider(settings, "vllm")
    assert vllm.base_url == "http://vllm:8000/v1" and vllm.route_prefix == "/vllm/v1"
    assert [key.get_secret_value() for key in vllm.keys] == ["sk-v1", "sk-v2"]  # an empty key is none
    assert vllm.auth_headers() == {"Authorization": "Bearer sk-v1"}
    claude = provider(settings, "claude-eu")
    assert claude.route_prefix == "/claude-eu" and claude.auth_headers() == {"x-api-key": "sk-ant-eu"}
    assert claude.families == (Family.ANTHROPIC_MESSAGES,)
    assert provider(settings, "anthropic").key is None
    with pytest.raises(ValueError, match="unknown provider"):
        provider(settings, "azure")


def test_a_configured_provider_replaces_the_default_of_its_name():
    settings = load_settings(openai_api_key="sk-default", providers=[{**VLLM, "name": "openai"}])
    (openai,) = [each for each in providers(settings) if each.name == "openai"]
    assert openai.base_url == "http://vllm:8000/v1" and openai.auth_headers() == {
        "Authorization": "Bearer sk-v1"
    }


@pytest.mark.parametrize(
    ("configured", "said"),
    [
        ([VLLM, VLLM], "provider names must be unique: vllm"),
        ([{**VLLM, "name": "api"}], "a route of the gateway's own"),
        ([{**VLLM, "name": "Bad Name"}], "providers.0.name"),
        ([{**VLLM, "type": "azure"}], "providers.0.type"),
        ([{**VLLM, "base_url": "vllm:8000"}], "providers.0.base_url"),
        ([{**VLLM, "region": "eu"}], "providers.0.region"),
    ],
)
def test_a_provider_that_cannot_be_used_is_one_line_naming_it(configured, said):
    with pytest.raises(ConfigError, match=said):
        load_settings(providers=configured)


def test_each_path_takes_the_shape_of_its_providers_family():
    routes = RouteFamilies(providers(load_settings(providers=[VLLM, CLAUDE])))
    assert routes.of("/anthropic/v1/messages") is Family.ANTHROPIC_MESSAGES
    assert routes.of("/claude-eu/v1/nothing-here") is Family.ANTHROPIC_MESSAGES
    assert routes.of("/openai/v1/responses") is Family.OPENAI_RESPONSES
    assert routes.of("/vllm/v1/responses/resp_1/input_items") is Family.OPENAI_RESPONSES
    assert routes.of("/vllm/v1/responsesx") is Family.OPENAI_CHAT
    assert routes.of("/vllm/v1/chat/completions") is Family.OPENAI_CHAT
    assert routes.of("/claude-eux/v1/messages") is Family.OPENAI_CHAT


BEDROCK = {"name": "bedrock", "type": "bedrock", "region": "eu-west-3"}


def test_a_bedrock_provider_speaks_messages_at_its_regions_endpoint_and_takes_no_keys():
    settings = load_settings(providers=[BEDROCK])
    bedrock = provider(settings, "bedrock")
    assert bedrock.base_url == "https://bedrock-runtime.eu-west-3.amazonaws.com"
    assert bedrock.families == (Family.ANTHROPIC_MESSAGES,) and bedrock.route_prefix == "/bedrock"
    assert not bedrock.takes_keys and bedrock.auth_headers("sk-client") == {}
    assert RouteFamilies(providers(settings)).of("/bedrock/v1/models") is Family.ANTHROPIC_MESSAGES


@pytest.mark.parametrize(
    ("configured", "said"),
    [
        ({**BEDROCK, "region": None}, "needs a region"),
        ({**BEDROCK, "region": "mars"}, "providers.0.region"),
        ({**BEDROCK, "keys": ["sk-x"]}, "not keys"),
        ({**BEDROCK, "access_key_id": "AKIA"}, "both access_key_id and secret_access_key"),
        ({**BEDROCK, "session_token": "t"}, "session_token without an access key pair"),
        ({**BEDROCK, "role_arn": "bedrock-role"}, "providers.0.role_arn"),
        ({**CLAUDE, "base_url": None}, "needs a base_url"),
        ({**CLAUDE, "models": {"a": "b"}}, "providers.0.models"),
    ],
)
def test_a_bedrock_provider_that_cannot_sign_is_one_line(configured, said):
    with pytest.raises(ConfigError, match=said) as error:
        load_settings(providers=[configured])
    assert "\n" not in str(error.value)
