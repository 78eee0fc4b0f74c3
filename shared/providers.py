"""The upstream providers: per provider name, where it is and how a request authenticates to it. One
definition for the API's passthrough routes and the worker's upstream calls."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import SecretStr

from shared.config import Settings

OPENAI = "openai"
ANTHROPIC = "anthropic"


@dataclass(frozen=True)
class Provider:
    name: str
    base_url: (
        str  # the gateway appends the API's path: OpenAI's "/chat/completions", Anthropic's "/v1/messages"
    )
    key: SecretStr | None  # the central key; None: none configured

    @property
    def key_header(self) -> str:
        """The request header a key goes in."""
        return "x-api-key" if self.name == ANTHROPIC else "Authorization"

    @property
    def key_variable(self) -> str:
        """The setting of the central key."""
        return f"AIBRIDGE_{self.name.upper()}_API_KEY"

    def auth_headers(self, client_key: str | None = None) -> dict[str, str]:
        """The headers that authenticate to the provider: with the client's own key when it brought one,
        else with the central key; none when there is neither."""
        key = client_key if client_key is not None else self.key and self.key.get_secret_value()
        if not key:
            return {}
        return {self.key_header: key if self.name == ANTHROPIC else f"Bearer {key}"}


def provider(settings: Settings, name: str) -> Provider:
    """The provider called ``name`` ("openai", "anthropic"); ValueError for another name."""
    if name == OPENAI:
        return Provider(OPENAI, settings.openai_base_url, settings.openai_api_key)
    if name == ANTHROPIC:
        return Provider(ANTHROPIC, settings.anthropic_base_url, settings.anthropic_api_key)
    raise ValueError(f"unknown provider: {name!r}")


def providers(settings: Settings) -> list[Provider]:
    """Every provider the gateway calls."""
    return [provider(settings, name) for name in (OPENAI, ANTHROPIC)]
