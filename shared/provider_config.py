"""The providers an operator configures beside the two defaults (``[[providers]]`` in the TOML file, or
``AIBRIDGE_PROVIDERS`` as JSON): each mounted under ``/<name>/`` with its type's routes."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

ProviderType = Literal["openai", "anthropic", "copilot"]
DEFAULT_BASE_URLS = {"copilot": "https://api.githubcopilot.com"}
RESERVED_NAMES = frozenset({"api", "healthz", "readyz", "metrics", "dashboard", "docs"})  # the gateway's own


class ProviderConfig(BaseModel):
    """One upstream: its name (its routes' prefix and its records' provider), its type (which API families it
    speaks, how it authenticates), where it is, and its keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    type: ProviderType
    base_url: str = Field(default="", pattern=r"^(https?://.*)?$")  # copilot's has a default
    keys: list[SecretStr] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, name: str) -> str:
        if name in RESERVED_NAMES:
            raise ValueError(f"'{name}' is a route of the gateway's own; name the provider otherwise")
        return name

    @field_validator("base_url")
    @classmethod
    def _no_trailing_slash(cls, base_url: str) -> str:
        return base_url.rstrip("/")

    @model_validator(mode="after")
    def _where_it_is(self) -> ProviderConfig:
        if not self.base_url and self.type not in DEFAULT_BASE_URLS:
            raise ValueError(f"provider '{self.name}' needs a base_url")
        if self.type == "copilot" and self.keys:
            raise ValueError(
                f"provider '{self.name}' is GitHub Copilot: it takes each user's own token, no keys"
            )
        return self

    @property
    def url(self) -> str:
        return self.base_url or DEFAULT_BASE_URLS[self.type]
