"""The routes of a GitHub Copilot provider, under ``/<name>``: chat completions and Responses as an OpenAI
provider's (``/<name>/chat/completions``, ``/<name>/responses``, ``/<name>/models``), Messages as an Anthropic
provider's (``/<name>/v1/messages``), every request with the user's own Copilot token (api/bridge.py)."""

from __future__ import annotations

from fastapi import APIRouter

from api.anthropic_routes import anthropic_router
from api.openai_routes import openai_router
from shared.providers import Provider

# What Copilot's own clients send to say who they are; the provider reads them
COPILOT_HEADERS = (
    "copilot-integration-id",
    "editor-version",
    "editor-plugin-version",
    "openai-intent",
    "x-github-api-version",
    "x-initiator",
    "x-interaction-type",
    "vscode-sessionid",
    "vscode-machineid",
)


def copilot_router(provider: Provider) -> APIRouter:
    router = APIRouter()
    router.include_router(openai_router(provider, COPILOT_HEADERS))
    router.include_router(anthropic_router(provider, COPILOT_HEADERS, passthrough=False))
    return router
