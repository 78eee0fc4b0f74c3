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

from shared.client_keys import Actor, ClientKeyStore, hash_key

MAX_CACHED = 10_000


class Unauthorized(Exception):
    """No client key, or one that is unknown or revoked (HTTP 401)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class KeyStoreUnavailable(Exception):
    """The database holding the client keys did not answer (HTTP 503)."""


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


def presented_key(request: Request) -> str | None:
    """The client key: ``Authorization: Bearer <key>`` (OpenAI clients) or ``X-Api-Key`` (Anthropic's)."""
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return request.headers.get("x-api-key", "").strip() or None


async def authenticate(request: Request) -> Actor | None:
    """The caller's actor; None when the gateway runs without client keys (``AIBRIDGE_AUTH=none``)."""
    client_keys: CachedClientKeys | None = request.app.state.aibridge_client_keys
    if client_keys is None:
        return None
    key = presented_key(request)
    if key is None:
        raise Unauthorized(
            "no client key: send an aibridge key as 'Authorization: Bearer <key>' or 'X-Api-Key: <key>'"
        )
    actor = await client_keys.actor_of(key)
    if actor is None:
        raise Unauthorized("the client key is not valid: unknown or revoked")
    return actor


Caller = Annotated[Actor | None, Depends(authenticate)]
