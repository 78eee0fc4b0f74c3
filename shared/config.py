"""Settings from the environment (prefix ``AIBRIDGE_``) and an optional TOML file."""

from __future__ import annotations

import ipaddress
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from cryptography.fernet import Fernet
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from shared.mcp.config import McpServerConfig
from shared.provider_config import ProviderConfig
from shared.recording.engine import async_url
from shared.redis_url import parse_redis_url

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
REPLACED_VARIABLES = {
    "AIBRIDGE_STREAM_MAXLEN": "AIBRIDGE_STREAM_MAX_BYTES (streams are bounded in bytes and never trimmed)",
}


class ConfigError(Exception):
    """Configuration that cannot be used; its message is one line meant for an operator."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AIBRIDGE_", extra="forbid")

    redis_url: str = DEFAULT_REDIS_URL
    key_prefix: str = "aibridge:"

    openai_base_url: str = "https://api.openai.com/v1"
    openai_api_key: SecretStr | None = None
    anthropic_base_url: str = "https://api.anthropic.com"
    anthropic_api_key: SecretStr | None = None
    providers: list[ProviderConfig] = Field(default_factory=list)

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"  # logging's and uvicorn's

    keepalive_interval: float = Field(default=10.0, gt=0)
    heartbeat_interval: float = Field(default=5.0, gt=0)
    heartbeat_timeout: float = Field(default=15.0, gt=0)
    pickup_timeout: float = Field(default=30.0, gt=0)
    stream_retention: float = Field(default=300.0, gt=0)
    resume_grace: float = Field(default=0.0, ge=0)
    stream_max_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    relay_buffer_bytes: int = Field(default=256 * 1024, ge=16 * 1024)

    upstream_connect_timeout: float = Field(default=10.0, gt=0)
    upstream_read_timeout: float = Field(default=600.0, gt=0)
    upstream_key_cooldown: float = Field(default=60.0, gt=0)
    circuit_failure_threshold: int = Field(default=5, ge=0)
    circuit_failure_window: float = Field(default=10.0, gt=0)
    circuit_open_time: float = Field(default=30.0, gt=0)
    circuit_probes: int = Field(default=3, ge=1)

    max_queue_depth: int = Field(default=10_000, ge=0)
    worker_max_jobs: int = Field(default=500, ge=1)
    job_timeout: float = Field(default=3600.0, gt=0)
    background_job_timeout: float = Field(default=3600.0, gt=0)
    background_retention: float = Field(default=3600.0, gt=0)
    response_id_retention: float = Field(default=30 * 24 * 3600.0, gt=0)
    worker_idle_poll: float = Field(default=1.0, gt=0)
    worker_shutdown_timeout: float = Field(default=30.0, ge=0)
    api_shutdown_timeout: float = Field(default=30.0, ge=0)
    worker_metrics_port: int | None = Field(default=None, ge=1, le=65535)
    metrics_models: list[str] = Field(default_factory=list)
    metrics_max_label_values: int = Field(default=100, ge=1)

    database_url: str = "sqlite+aiosqlite:///aibridge.db"
    auto_migrate: bool = True
    record_outbox_maxlen: int = Field(default=500_000, ge=100)
    record_claim_idle: float = Field(default=30.0, gt=0)

    auth: Literal["keys", "none"] = "keys"
    key_cache_ttl: float = Field(default=5.0, ge=0)
    secret_key: SecretStr | None = None
    send_actor_headers: bool = False
    max_body_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    header_timeout: float = Field(default=10.0, gt=0)
    body_timeout: float = Field(default=60.0, gt=0)
    max_concurrent_per_actor: int = Field(default=0, ge=0)
    requests_per_minute_per_actor: int = Field(default=0, ge=0)

    mcp_servers: list[McpServerConfig] = Field(default_factory=list)
    mcp_call_timeout: float = Field(default=600.0, gt=0)
    mcp_max_rounds: int = Field(default=16, ge=1)

    @property
    def slot_lease(self) -> float:
        """Seconds a running request's concurrency slot lasts unless its worker's heartbeat renews it."""
        return self.heartbeat_timeout + self.heartbeat_interval

    @field_validator("providers")
    @classmethod
    def _unique_provider_names(cls, configured: list[ProviderConfig]) -> list[ProviderConfig]:
        _check_unique([each.name for each in configured], "provider names")
        return configured

    @field_validator("mcp_servers")
    @classmethod
    def _unique_server_names(cls, servers: list[McpServerConfig]) -> list[McpServerConfig]:
        _check_unique([server.name for server in servers], "MCP server names")
        return servers

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_case_level(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        parse_redis_url(value)  # raises ValueError (never showing the password) for a URL it cannot use
        return value

    @field_validator("database_url")
    @classmethod
    def _database_driver(cls, value: str) -> str:
        async_url(value)  # raises ValueError for a database the recorder cannot use
        return value

    @field_validator("openai_base_url", "anthropic_base_url")
    @classmethod
    def _http_scheme(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("openai_api_key", "anthropic_api_key", "secret_key", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        """An empty secret is no secret: compose turns an unset variable into an empty one."""
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("secret_key")
    @classmethod
    def _fernet_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            try:
                Fernet(value.get_secret_value())
            except ValueError:
                raise ValueError(
                    "must be a Fernet key (32 url-safe base64-encoded bytes): make one with "
                    "`python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`"
                ) from None
        return value

    @model_validator(mode="after")
    def _no_auth_only_on_loopback(self) -> Settings:
        if self.auth == "none" and not is_loopback(self.host):
            raise ValueError(
                f"auth=none (AIBRIDGE_AUTH) is refused when the API binds to {self.host}, which is not "
                "loopback: create client keys (`aibridge keys create`) or bind to 127.0.0.1"
            )
        return self

    @field_validator("heartbeat_timeout")
    @classmethod
    def _timeout_covers_heartbeats(cls, value: float, info: Any) -> float:
        interval = info.data.get("heartbeat_interval")
        if interval is not None and value <= interval:
            raise ValueError("must be larger than heartbeat_interval")
        return value


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _check_unique(names: list[str], what: str) -> None:
    if duplicated := sorted({name for name in names if names.count(name) > 1}):
        raise ValueError(f"{what} must be unique: {', '.join(duplicated)}")


def load_settings(config_path: Path | None = None, **overrides: Any) -> Settings:
    """Settings from defaults, then the TOML file, then the environment, then ``overrides``.

    Raises ConfigError with a one-line message on anything unusable.
    """
    for variable, replacement in REPLACED_VARIABLES.items():
        if variable in os.environ:  # an operator's setting that would otherwise be ignored without a word
            raise ConfigError(f"{variable} is no longer read: use {replacement}")

    class _FileSettings(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            from_env = _JsonCheckedEnvSource(settings_cls)
            return (init_settings, from_env, InitSettingsSource(settings_cls, init_kwargs=from_file))

    from_file = _read_toml(config_path) if config_path is not None else {}
    try:
        return _FileSettings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_one_line(exc)) from None


def _environment_variable(field: str) -> str:
    return f"AIBRIDGE_{field.upper()}"


class _JsonCheckedEnvSource(EnvSettingsSource):
    """The environment, where a list or table setting that is not JSON is a ConfigError naming its variable."""

    def prepare_field_value(
        self, field_name: str, field: FieldInfo, value: Any, value_is_complex: bool
    ) -> Any:
        try:
            return super().prepare_field_value(field_name, field, value, value_is_complex)
        except ValueError as exc:
            raise ConfigError(f"{_environment_variable(field_name)} is not valid JSON: {exc}") from None


def _read_toml(path: Path) -> dict[str, Any]:
    """The file's settings, with tables flattened: ``[[mcp.servers]]`` is ``mcp_servers``."""
    try:
        with path.open("rb") as file:
            document = tomllib.load(file)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except OSError as exc:  # a directory, a file it may not read
        raise ConfigError(f"config file {path}: {exc.strerror}") from None
    except ValueError as exc:  # not TOML, or not UTF-8
        raise ConfigError(f"config file {path}: {exc}") from None
    flat: dict[str, Any] = {}
    for key, value in document.items():
        if isinstance(value, dict):
            flat.update({f"{key}_{inner}": inner_value for inner, inner_value in value.items()})
        else:
            flat[key] = value
    return flat


def _one_line(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        if not error["loc"]:  # a rule over several settings: its message names them
            problems.append(error["msg"].removeprefix("Value error, "))
            continue
        field = ".".join(str(part) for part in error["loc"])
        variable = _environment_variable(str(error["loc"][0]))
        problems.append(f"{field} ({variable}): {error['msg']}")
    return "invalid configuration: " + "; ".join(problems)
