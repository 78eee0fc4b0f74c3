"""One configured MCP server: where it is (streamable HTTP URL or stdio command) and which tools it offers."""

from __future__ import annotations

import re
import shlex
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, ValidationInfo, field_validator

SERVER_NAME_PATTERN = r"^[a-zA-Z0-9_-]+$"


def _compile(value: str | None, field: str) -> re.Pattern[str] | None:
    if value is None:
        return None
    try:
        return re.compile(value)
    except re.error as exc:
        raise ValueError(f"{field} is not a valid regular expression: {exc}") from None


class McpServerConfig(BaseModel):
    """An MCP server whose tools are injected, as ``bmcp_<name>_<tool>``, into chat requests.

    Exactly one of ``url`` (streamable HTTP, with optional ``headers`` such as ``Authorization``) or
    ``command`` (stdio: ``command`` with ``args``, and ``env`` on top of a minimal inherited environment).

    ``allow`` and ``deny`` are regular expressions matched with ``re.search`` against the tool's name on
    the server (unanchored, as coder/aibridge's Go ``MatchString``: anchor with ``^...$`` for an exact
    name). A tool is offered when it matches ``allow`` (if set) and does not match ``deny``: deny wins.

    ``headers`` values are secrets: they are ``SecretStr`` (masked in ``repr``, ``str`` and JSON dumps);
    ``header_values()`` gives them in clear for the transport. ``env`` is left out of ``repr`` as well, as
    it often carries tokens.
    """

    # hide_input_in_errors: a validation error must not echo the headers or env it was given.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    # Field order matters: ``command`` is validated last of the transport fields, and checks them all.
    name: str = Field(pattern=SERVER_NAME_PATTERN)
    url: str | None = None
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict, repr=False)
    command: str | None = Field(default=None, validate_default=True)
    allow: str | None = None
    deny: str | None = None

    _allow_re: re.Pattern[str] | None = PrivateAttr(default=None)
    _deny_re: re.Pattern[str] | None = PrivateAttr(default=None)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("url must be an http:// or https:// URL with a host")
        return value

    @field_validator("command")
    @classmethod
    def _one_transport(cls, value: str | None, info: ValidationInfo) -> str | None:
        """Exactly one of url and command, and the options of the other one unset.

        Checked here rather than in a model validator so that an error never echoes the whole input (its
        headers and env) when this model is validated inside another one (the settings)."""
        if "url" not in info.data:
            return value  # url itself was rejected: that error says enough
        name = info.data.get("name", "?")
        url = info.data["url"]
        if value is not None and not value.strip():
            raise ValueError(f"MCP server {name!r}: command must not be empty")
        if url is not None and value is not None:
            raise ValueError(
                f"MCP server {name!r}: set either url (streamable HTTP) or command (stdio), not both"
            )
        if url is None and value is None:
            raise ValueError(f"MCP server {name!r}: set url (streamable HTTP) or command (stdio)")
        if url is not None and (info.data.get("args") or info.data.get("env")):
            raise ValueError(f"MCP server {name!r}: args and env are for a stdio command, not for url")
        if value is not None and info.data.get("headers"):
            raise ValueError(f"MCP server {name!r}: headers are for url, not for a stdio command")
        return value

    @field_validator("allow", "deny")
    @classmethod
    def _valid_regex(cls, value: str | None, info: ValidationInfo) -> str | None:
        _compile(value, info.field_name)
        return value

    def model_post_init(self, context: Any, /) -> None:
        self._allow_re = _compile(self.allow, "allow")
        self._deny_re = _compile(self.deny, "deny")

    @property
    def server_url(self) -> str:
        """The server as recorded with its tools' usage: the URL, or ``stdio:<command> <args...>``."""
        if self.url is not None:
            return self.url
        return "stdio:" + " ".join([self.command or "", *(shlex.quote(arg) for arg in self.args)])

    def header_values(self) -> dict[str, str]:
        """The HTTP headers in clear, for the transport only: never log them."""
        return {key: value.get_secret_value() for key, value in self.headers.items()}

    def offers(self, tool_name: str) -> bool:
        """Whether the filters let this tool through (``allow`` if set, minus ``deny``)."""
        if self._deny_re is not None and self._deny_re.search(tool_name):
            return False
        return self._allow_re is None or self._allow_re.search(tool_name) is not None
