"""Who is calling: the client key a request carries, resolved to its actor.

Keys are looked up in the recording database through a short in-process cache (``key_cache_ttl``
seconds), so the hot path does not touch the database on every request; a revoked key stops working within
that bound. Unknown keys are cached too, so a flood of wrong keys does not reach the database either.
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.exc import SQLAlchemyError

from api.errors import GatewayError, Unavailable
from api.route_family import route_family, takes_user_token
from shared.client_keys import Actor, ClientKeyStore, hash_key
from shared.families import Family

MAX_CACHED = 10_000


class Unauthorized(GatewayError):
    """No client key, or one that is unknown or revoked (HTTP 401)."""

    def __init__(self, message: str) -> None:
        super().__init__(
            401, message, "invalid_request_error", "invalid_api_key", {"WWW-Authenticate": "Bearer"}
        )


class KeyStoreUnavailable(Unavailable):
    """The database holding the client keys did not answer (HTTP 503)."""

    def __init__(self) -> None:
        super().__init__("the gateway's client keys are", "keys_unavailable")


class CachedClientKeys:
    """Key hash -> actor (None: no such key, or revoked), each answer kept for ``ttl`` seconds."""

    def __init__(self, store: ClientKeyStore, ttl: float) -> None:
        self._store = store
        self._ttl = ttl
        self._cached: dict[str, tuple[float, Actor | None]] = {}

    async def actor_of(self, key: str) -> Actor | None:
        digest = hash_key(key)
        now = time.monotonic()
        cached = self._cached.get(digest)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            actor = await self._store.actor_of(digest)
        except (SQLAlchemyError, OSError) as exc:
            raise KeyStoreUnavailable() from exc
        if len(self._cached) >= MAX_CACHED:
            self._cached = {d: entry for d, entry in self._cached.items() if entry[0] > now}
            if len(self._cached) >= MAX_CACHED:
                self._cached.clear()
        self._cached[digest] = (now + self._ttl, actor)
        return actor


def presented_key(request: Request, family: Family) -> str | None:
    """The client key, as the family's clients send it: ``Authorization: Bearer <key>`` (OpenAI's, and
    Claude Code's ANTHROPIC_AUTH_TOKEN) or ``X-Api-Key`` (Anthropic's); each family's own header first."""
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    bearer = credentials.strip() if scheme.lower() == "bearer" else ""
    api_key = request.headers.get("x-api-key", "").strip()
    first, second = (api_key, bearer) if family is Family.ANTHROPIC_MESSAGES else (bearer, api_key)
    return first or second or None


USER_TOKEN_KEY_HEADER = "'X-Api-Key: <key>' (Authorization carries your own provider token)"
KEY_HEADERS = {
    Family.OPENAI_CHAT: "'Authorization: Bearer <key>' or 'X-Api-Key: <key>'",
    Family.ANTHROPIC_MESSAGES: "'X-Api-Key: <key>' or 'Authorization: Bearer <key>'",
    Family.OPENAI_RESPONSES: "'Authorization: Bearer <key>' or 'X-Api-Key: <key>'",
}


async def authenticate(request: Request) -> Actor | None:
    """The caller's actor; None when the gateway runs without client keys (``AIBRIDGE_AUTH=none``)."""
    client_keys: CachedClientKeys | None = request.app.state.aibridge_client_keys
    if client_keys is None:
        return None
    family = route_family(request.app, request.url.path)
    if takes_user_token(request.app, request.url.path):  # Authorization is the user's Copilot token
        key = request.headers.get("x-api-key", "").strip() or None
        where = USER_TOKEN_KEY_HEADER
    else:
        key, where = presented_key(request, family), KEY_HEADERS[family]
    if key is None:
        raise Unauthorized(f"no client key: send an aibridge key as {where}")
    actor = await client_keys.actor_of(key)
    if actor is None:
        raise Unauthorized("the client key is not valid: unknown or revoked")
    return actor


Caller = Annotated[Actor | None, Depends(authenticate)]
