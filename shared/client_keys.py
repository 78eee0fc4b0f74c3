"""Client keys: who may use the gateway, and as which actor.

A key is ``aib_<id>_<secret>``: the id (12 hex digits) names the key in ``aibridge keys list`` and
``revoke`` and is not secret; the whole key is shown once, when it is created. The database keeps only the
key's SHA-256 (a key is 256 random bits, so a fast hash is as good as a slow one), with the actor id and
metadata every interception made with it is recorded under.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.recording.records import utcnow
from shared.recording.schema import client_keys

KEY_PREFIX = "aib_"
_ID_HEX_DIGITS = 12
_HEADER_VALUE = re.compile(r"^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$")  # printable ASCII, no edge spaces
_METADATA_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}$")  # part of an HTTP header name
_MAX_VALUE = 256


class InvalidActor(ValueError):
    """An actor id or metadata that cannot be sent as HTTP headers (see ``actor_headers``)."""


@dataclass(frozen=True)
class Actor:
    """Who made a request: the actor of the client key it carried."""

    id: str
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class NewKey:
    id: str
    key: str  # shown once, never stored


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> NewKey:
    key_id = secrets.token_hex(_ID_HEX_DIGITS // 2)
    return NewKey(key_id, f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}")


def validate_actor(actor_id: str, metadata: dict[str, str]) -> Actor:
    """The actor, if its id and metadata can travel as ``X-AI-Bridge-Actor-*`` headers; else InvalidActor."""
    if len(actor_id) > _MAX_VALUE or not _HEADER_VALUE.match(actor_id):
        raise InvalidActor(f"actor id {actor_id!r}: use 1 to {_MAX_VALUE} printable ASCII characters")
    for name, value in metadata.items():
        if not _METADATA_KEY.match(name):
            raise InvalidActor(f"metadata key {name!r}: use letters, digits and '-' (at most 64)")
        if len(value) > _MAX_VALUE or not _HEADER_VALUE.match(value):
            raise InvalidActor(f"metadata {name}: use 1 to {_MAX_VALUE} printable ASCII characters")
    return Actor(actor_id, dict(metadata))


class ClientKeyStore:
    """The client keys in the recording database (its schema applied by ``aibridge db upgrade``)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def create(self, actor: Actor) -> NewKey:
        made = new_key()
        async with self._engine.begin() as connection:
            await connection.execute(
                sa.insert(client_keys).values(
                    id=made.id,
                    key_hash=hash_key(made.key),
                    actor_id=actor.id,
                    actor_metadata=actor.metadata,
                    created_at=utcnow(),
                )
            )
        return made

    async def actor_of(self, key_hash: str) -> Actor | None:
        """The actor of the key whose ``hash_key`` is ``key_hash``, if it exists and is not revoked."""
        table = client_keys.c
        query = sa.select(table.actor_id, table.actor_metadata).where(
            table.key_hash == key_hash, table.revoked_at.is_(None)
        )
        async with self._engine.connect() as connection:
            row = (await connection.execute(query)).first()
        return None if row is None else Actor(row.actor_id, dict(row.actor_metadata))

    async def list(self) -> list[dict[str, Any]]:
        """Every key, oldest first, without its hash."""
        table = client_keys.c
        query = sa.select(
            table.id, table.actor_id, table.actor_metadata, table.created_at, table.revoked_at
        ).order_by(table.created_at, table.id)
        async with self._engine.connect() as connection:
            return [dict(row) for row in (await connection.execute(query)).mappings()]

    async def revoke(self, key_id: str, at: datetime | None = None) -> bool:
        """Revoke the key ``key_id``; False if there is no such key or it was already revoked."""
        table = client_keys.c
        statement = (
            sa.update(client_keys)
            .where(table.id == key_id, table.revoked_at.is_(None))
            .values(revoked_at=at or utcnow())
        )
        async with self._engine.begin() as connection:
            return (await connection.execute(statement)).rowcount == 1
