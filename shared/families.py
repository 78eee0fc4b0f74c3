"""The API families the gateway speaks, each a wire format of its own (see ../shared/DESIGN.md's table)."""

from __future__ import annotations

from enum import StrEnum


class Family(StrEnum):
    OPENAI_CHAT = "openai_chat"  # POST /openai/v1/chat/completions
    ANTHROPIC_MESSAGES = "anthropic_messages"  # POST /anthropic/v1/messages
