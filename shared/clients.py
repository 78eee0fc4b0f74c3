"""Which program sent a request, and its session, read from the request's headers.

One table of rules, tried in order, the first that matches names the client: a user agent prefix, or a
header (with a value prefix, or any value). Coding agents come before the SDKs they are built on (Claude Code
sends the Anthropic SDK's ``x-stainless-*`` headers under its own user agent), and GitHub Copilot's
``copilot-integration-id`` comes late because other clients send it to Copilot too. Claude Code's, Codex's and
the Python SDKs' rules are checked on the headers those programs sent (tests/data/client_headers); the others
follow the user agents their projects publish.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

MAX_SESSION_ID = 256


class Client(StrEnum):
    """The clients the gateway tells apart: a fixed set, so a metric label of it stays bounded."""

    CLAUDE_CODE = "claude-code"
    CODEX = "codex"
    CURSOR = "cursor"
    GITHUB_COPILOT = "github-copilot"
    ZED = "zed"
    OPENCODE = "opencode"
    AIDER = "aider"
    ROO_CODE = "roo-code"
    KILO_CODE = "kilo-code"
    OPENAI_SDK = "openai-sdk"
    ANTHROPIC_SDK = "anthropic-sdk"
    UNKNOWN = "unknown"


class ClientIdentity(NamedTuple):
    client: Client
    session_id: str | None


UNIDENTIFIED = ClientIdentity(Client.UNKNOWN, None)


@dataclass(frozen=True)
class Rule:
    """``client`` when the user agent starts with one of ``user_agents``, or one of ``headers`` is there
    (name, value prefix; None: any value); all compared in lower case. Its session id is the first of
    ``session_headers`` sent."""

    client: Client
    user_agents: tuple[str, ...] = ()
    headers: tuple[tuple[str, str | None], ...] = ()
    session_headers: tuple[str, ...] = ()

    def matches(self, headers: Mapping[str, str], user_agent: str) -> bool:
        if user_agent.startswith(self.user_agents):
            return True
        for name, prefix in self.headers:
            value = headers.get(name)
            if value is not None and (prefix is None or value.lower().startswith(prefix)):
                return True
        return False


RULES = (
    Rule(
        Client.CLAUDE_CODE,
        user_agents=("claude-cli/", "claude-code/"),
        headers=(("x-claude-code-session-id", None),),
        session_headers=("x-claude-code-session-id",),
    ),
    Rule(
        Client.CODEX,
        user_agents=("codex_",),  # codex_exec/, codex_cli_rs/, codex_vscode/
        headers=(("originator", "codex_"),),
        session_headers=("session-id", "session_id"),  # session_id: the older spelling
    ),
    Rule(Client.OPENCODE, user_agents=("opencode/",), headers=(("originator", "opencode"),)),
    Rule(
        Client.ROO_CODE,
        user_agents=("roo-code/", "roocode/"),
        headers=(("originator", "roo-code"), ("x-title", "roo code")),
    ),
    Rule(
        Client.KILO_CODE,
        user_agents=("kilo-code/", "kilocode/"),
        headers=(("originator", "kilo-code"), ("x-title", "kilo code")),
    ),
    Rule(Client.CURSOR, user_agents=("cursor/",), headers=(("x-cursor-client-version", None),)),
    Rule(Client.ZED, user_agents=("zed/",)),
    Rule(
        Client.AIDER,
        user_agents=("aider/",),
        headers=(("x-title", "aider"), ("http-referer", "https://aider.chat")),
    ),
    Rule(
        Client.GITHUB_COPILOT,
        user_agents=("githubcopilotchat/", "copilot/"),
        headers=(("copilot-integration-id", None),),
    ),
    Rule(Client.OPENAI_SDK, user_agents=("openai/",)),  # OpenAI/Python 1.x, OpenAI/JS 4.x
    Rule(Client.ANTHROPIC_SDK, user_agents=("anthropic/",)),  # Anthropic/Python, Anthropic/JS
)


def detect_client(headers: Mapping[str, str]) -> ClientIdentity:
    """The client of a request with ``headers`` (names in lower case, as Starlette's), and its session id
    when the client sends one: a header value of at most 256 printable characters, else None."""
    user_agent = headers.get("user-agent", "").lower()
    for rule in RULES:
        if rule.matches(headers, user_agent):
            return ClientIdentity(rule.client, _session_id(headers, rule.session_headers))
    return UNIDENTIFIED


def _session_id(headers: Mapping[str, str], names: tuple[str, ...]) -> str | None:
    for name in names:
        value = headers.get(name, "").strip()
        if value:
            return value if len(value) <= MAX_SESSION_ID and value.isprintable() else None
    return None
