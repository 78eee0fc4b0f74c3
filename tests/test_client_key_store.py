"""The client key store on SQLite and PostgreSQL: only a hash is stored, revoked keys resolve to nobody."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa

from shared.client_keys import ClientKeyStore, InvalidActor, hash_key, validate_actor
from shared.recording.engine import create_engine


def test_keys_are_stored_as_hashes_and_revocation_sticks(recording_database):
    async def body() -> None:
        engine = create_engine(recording_database.url)
        store = ClientKeyStore(engine)
        try:
            made = await store.create(validate_actor("alice", {"Username": "alice"}))
            other = await store.create(validate_actor("bob", {}))
            assert made.key.startswith(f"aib_{made.id}_") and len(made.key) > 50
            assert (await store.actor_of(hash_key(made.key))).metadata == {"Username": "alice"}
            assert await store.actor_of(hash_key(made.key + "x")) is None
            async with engine.connect() as connection:
                dump = repr((await connection.execute(sa.text("SELECT * FROM client_keys"))).all())
            assert made.key not in dump and made.key.split("_", 2)[2] not in dump
            assert hash_key(made.key) in dump
            assert await store.revoke(made.id) is True
            assert await store.revoke(made.id) is False
            assert await store.actor_of(hash_key(made.key)) is None
            assert (await store.actor_of(hash_key(other.key))).id == "bob"
            listed = {row["id"]: row for row in await store.list()}
            assert listed[made.id]["revoked_at"] is not None and listed[other.id]["revoked_at"] is None
            assert "key_hash" not in listed[made.id]
        finally:
            await engine.dispose()

    asyncio.run(body())


@pytest.mark.parametrize(
    ("actor", "metadata"),
    [("", {}), ("two\nlines", {}), ("x" * 300, {}), ("ok", {"Has Space": "v"}), ("ok", {"K": "line\r\n"})],
)
def test_actors_that_cannot_travel_as_headers_are_refused(actor, metadata):
    with pytest.raises(InvalidActor):
        validate_actor(actor, metadata)
