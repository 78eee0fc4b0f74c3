"""The MCP tools the gateway injects into chat requests, as coder/aibridge does (``bmcp_<server>_<tool>``)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

INJECTED_PREFIX = "bmcp_"
MAX_TOOL_NAME = 64
"""OpenAI's limit on a function name; a tool whose injected name is longer is not offered."""

OPENAI_NAME = re.compile(r"^[a-zA-Z0-9_-]+$")
"""What OpenAI accepts as a function name; a tool whose injected name is not this is not offered."""


def injected_name(server: str, tool: str) -> str:
    """The name the model sees for ``tool`` of MCP server ``server``."""
    return f"{INJECTED_PREFIX}{server}_{tool}"


@dataclass(frozen=True)
class McpTool:
    """One tool of a configured MCP server, as offered to the model."""

    server: str
    """The server's name in the configuration."""
    server_url: str
    """The server as recorded: its URL, or ``stdio:<command> <args...>``."""
    name: str
    """The tool's name on the MCP server."""
    injected_name: str
    """``bmcp_<server>_<tool>``: the function name the model sees."""
    description: str | None
    input_schema: dict[str, Any] = field(hash=False, compare=False)

    def as_openai_tool(self) -> dict[str, Any]:
        """The chat-completions ``tools`` entry, as coder/aibridge's ``injectTools`` builds it: only the
        schema's ``properties`` and ``required`` are kept, ``strict`` is off, and a missing description is
        ``""``."""
        properties = self.input_schema.get("properties")
        required = self.input_schema.get("required")
        return {
            "type": "function",
            "function": {
                "name": self.injected_name,
                "description": self.description or "",
                "parameters": {
                    "type": "object",
                    "properties": properties if isinstance(properties, dict) else {},
                    "required": required if isinstance(required, list) else [],
                },
                "strict": False,
            },
        }


class ToolCallError(Exception):
    """A tool call that did not produce a result; the message says why (the tool's error text, a timeout,
    the server being unreachable), and is what the model is told."""
