"""The providers an operator configures beside the two defaults (``[[providers]]`` in the TOML file, or
``AIBRIDGE_PROVIDERS`` as JSON): each mounted under ``/<name>/`` with its type's routes."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator, model_validator

ProviderType = Literal["openai", "anthropic", "bedrock", "copilot"]
DEFAULT_BASE_URLS = {"copilot": "https://api.githubcopilot.com"}
RESERVED_NAMES = frozenset({"api", "healthz", "readyz", "metrics", "dashboard", "docs"})  # the gateway's own
BEDROCK_FIELDS = ("region", "access_key_id", "secret_access_key", "session_token", "role_arn", "models")


class ProviderConfig(BaseModel):
    """One upstream: its name (its routes' prefix and its records' provider), its type (which API families it
    speaks, how it authenticates), where it is, and its keys. A ``bedrock`` provider signs with AWS
    credentials instead: its access key pair, else the default credential chain, either one assuming
    ``role_arn`` if set; ``models`` maps a client's model name to a Bedrock model id (unmapped: used as is)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    type: ProviderType
    base_url: str | None = Field(default=None, pattern=r"^https?://")  # bedrock's and copilot's have defaults
    keys: list[SecretStr] = Field(default_factory=list)
    region: str | None = Field(default=None, pattern=r"^[a-z]{2}(-[a-z]+)+-\d+$")
    access_key_id: SecretStr | None = None
    secret_access_key: SecretStr | None = None
    session_token: SecretStr | None = None
    role_arn: str | None = Field(default=None, pattern=r"^arn:aws[a-z-]*:iam::\d{12}:role/.+")
    models: dict[str, str] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, name: str) -> str:
        if name in RESERVED_NAMES:
            raise ValueError(f"'{name}' is a route of the gateway's own; name the provider otherwise")
        return name

    @field_validator("base_url")
    @classmethod
    def _no_trailing_slash(cls, base_url: str | None) -> str | None:
        return base_url.rstrip("/") if base_url is not None else None

    @field_validator(*BEDROCK_FIELDS)
    @classmethod
    def _bedrock_only(cls, value: object, info: ValidationInfo) -> object:
        if info.data.get("type") != "bedrock":
            raise ValueError("only a provider of type 'bedrock' takes this")
        return value

    @model_validator(mode="after")
    def _complete(self) -> ProviderConfig:
        where = f"provider '{self.name}'"
        if self.type == "copilot" and self.keys:
            raise ValueError(f"{where} is GitHub Copilot: it takes each user's own token, no keys")
        if self.type != "bedrock":
            if self.base_url is None and self.type not in DEFAULT_BASE_URLS:
                raise ValueError(f"{where} needs a base_url")
            return self
        if self.region is None:
            raise ValueError(f"{where} (bedrock) needs a region, e.g. us-east-1")
        if self.keys:
            raise ValueError(f"{where} (bedrock) signs with AWS credentials, not keys: drop its keys")
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError(f"{where} (bedrock) needs both access_key_id and secret_access_key, or neither")
        if self.session_token is not None and self.access_key_id is None:
            raise ValueError(f"{where} (bedrock) has a session_token without an access key pair")
        return self

    @property
    def url(self) -> str:
        """Where the provider is: its base URL, Copilot's, or a Bedrock provider's region's runtime endpoint."""
        if self.base_url is not None:
            return self.base_url
        if self.type in DEFAULT_BASE_URLS:
            return DEFAULT_BASE_URLS[self.type]
        return f"https://bedrock-runtime.{self.region}.amazonaws.com"
