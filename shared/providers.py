"""The upstream providers: per provider name, its type, where it is and how a request authenticates to it. One
definition for the API's routes and passthrough and the worker's upstream calls.

Two are always there, ``openai`` and ``anthropic``, from their ``AIBRIDGE_*`` variables (a configured provider of
the same name replaces one); the operator's ``[[providers]]`` come after them (shared/provider_config.py)."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import SecretStr

from shared.config import Settings
from shared.families import Family
from shared.provider_config import ProviderConfig

OPENAI = "openai"
ANTHROPIC = "anthropic"
BEDROCK = "bedrock"
COPILOT = "copilot"

FAMILIES = {
    OPENAI: (Family.OPENAI_CHAT, Family.OPENAI_RESPONSES),
    ANTHROPIC: (Family.ANTHROPIC_MESSAGES,),
    BEDROCK: (Family.ANTHROPIC_MESSAGES,),
    COPILOT: (Family.OPENAI_CHAT, Family.OPENAI_RESPONSES, Family.ANTHROPIC_MESSAGES),
}


@dataclass(frozen=True)
class Provider:
    name: str
    type: str  # OPENAI, ANTHROPIC, BEDROCK or COPILOT: the API families it speaks, how it authenticates
    base_url: (
        str  # the gateway appends the API's path: OpenAI's "/chat/completions", Anthropic's "/v1/messages"
    )
    keys: tuple[SecretStr, ...]  # the central keys; none configured: ()
    key_variable: str  # where its keys are set, for an operator
    aws: ProviderConfig | None = None  # a BEDROCK provider's: its region, credentials and model ids

    @property
    def takes_keys(self) -> bool:
        """Whether a key authenticates to it (a Bedrock provider signs each request instead)."""
        return self.type != BEDROCK

    @property
    def key(self) -> SecretStr | None:
        return self.keys[0] if self.keys else None

    @property
    def key_header(self) -> str:
        """The request header a key goes in."""
        return "x-api-key" if self.type == ANTHROPIC else "Authorization"

    @property
    def route_prefix(self) -> str:
        """The gateway's path that stands for the provider's base URL: ``/<name>/v1`` for OpenAI's (whose base
        URL ends in /v1), ``/<name>`` for Anthropic's and Copilot's (``/chat/completions``, ``/responses``
        and ``/v1/messages`` below it)."""
        return f"/{self.name}/v1" if self.type == OPENAI else f"/{self.name}"

    @property
    def families(self) -> tuple[Family, ...]:
        return FAMILIES[self.type]

    @property
    def takes_user_token(self) -> bool:
        """Whether every request calls it with the user's own token (GitHub Copilot's), never a central key."""
        return self.type == COPILOT

    def auth_headers(self, client_key: str | None = None) -> dict[str, str]:
        """The headers that authenticate to the provider: with the client's own key when it brought one,
        else with the central key; none when there is neither."""
        key = client_key if client_key is not None else self.key and self.key.get_secret_value()
        if not key or not self.takes_keys:
            return {}
        return {self.key_header: key if self.type == ANTHROPIC else f"Bearer {key}"}


def providers(settings: Settings) -> list[Provider]:
    """Every provider the gateway calls: the defaults, then the configured ones."""
    configured = [
        Provider(
            each.name,
            each.type,
            each.url,
            _nonempty(each.keys),
            f"the keys of provider '{each.name}'",
            each if each.type == BEDROCK else None,
        )
        for each in settings.providers
    ]
    names = {each.name for each in configured}
    defaults = [
        Provider(
            OPENAI,
            OPENAI,
            settings.openai_base_url,
            _keys(settings.openai_api_key),
            "AIBRIDGE_OPENAI_API_KEY",
        ),
        Provider(
            ANTHROPIC,
            ANTHROPIC,
            settings.anthropic_base_url,
            _keys(settings.anthropic_api_key),
            "AIBRIDGE_ANTHROPIC_API_KEY",
        ),
    ]
    return [*(each for each in defaults if each.name not in names), *configured]


def provider(settings: Settings, name: str) -> Provider:
    """The provider called ``name``; ValueError for a name no provider has."""
    for each in providers(settings):
        if each.name == name:
            return each
    raise ValueError(f"unknown provider: {name!r}")


def _keys(keys: SecretStr | None) -> tuple[SecretStr, ...]:
    """The keys of a variable that holds one, or several separated by commas."""
    listed = keys.get_secret_value().split(",") if keys is not None else []
    return _nonempty([SecretStr(key.strip()) for key in listed])


def _nonempty(keys: list[SecretStr]) -> tuple[SecretStr, ...]:
    return tuple(key for key in keys if key.get_secret_value())  # an empty key is no key


class RouteFamilies:
    """Which family's shape the answers on a path take, by the providers' routes: Anthropic's under a provider
    of Messages only (Anthropic's, Bedrock's) and a Copilot provider's ``/v1/messages``, Responses' under their
    ``/responses``, else chat completions'; and the paths whose ``Authorization`` is the user's own provider
    token (Copilot's), not a gateway key."""

    def __init__(self, all_providers: list[Provider]) -> None:
        routes: list[tuple[str, Family]] = []
        for each in all_providers:
            prefix = each.route_prefix
            if each.families == (Family.ANTHROPIC_MESSAGES,):
                routes.append((prefix, Family.ANTHROPIC_MESSAGES))
            else:
                routes.append((f"{prefix}/responses", Family.OPENAI_RESPONSES))
            if each.type == COPILOT:
                routes.append((f"{prefix}/v1/messages", Family.ANTHROPIC_MESSAGES))
        self._routes = tuple(routes)
        self._user_token = tuple(each.route_prefix for each in all_providers if each.takes_user_token)

    def of(self, path: str) -> Family:
        for prefix, family in self._routes:
            if _under(path, prefix):
                return family
        return Family.OPENAI_CHAT

    def takes_user_token(self, path: str) -> bool:
        return any(_under(path, prefix) for prefix in self._user_token)


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")
