"""Redis connections: arq's pool with JSON (never pickle) job payloads."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import hiredis
import orjson
from arq.connections import ArqRedis, RedisSettings, create_pool
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ResponseError
from redis.typing import EncodableT

from shared.keys import RedisKeys

Command = Sequence[EncodableT]
"""A Redis command as its arguments, as hiredis packs it."""


def redis_settings(url: str) -> RedisSettings:
    return RedisSettings.from_dsn(url)


class PromptCheckoutPool(ConnectionPool):
    """redis-py's pool, without the read it tries on every connection it hands out.

    That check (``can_read_destructive``) waits a loop iteration for a read that times out at once, while
    holding the pool's lock: on a busy process every command then queues for the lock behind every other one,
    and a worker took seconds to pick up jobs while it streamed hundreds of others. A connection never comes
    back with a reply unread: redis-py drops a connection whose command failed or was cancelled. One the
    server closed (a Redis restart) is reopened before use, from what the event loop already knows."""

    async def ensure_connection(self, connection: AbstractConnection) -> None:
        await connect_afresh_if_closed(connection)


async def connect_afresh_if_closed(connection: AbstractConnection) -> None:
    """Connect ``connection``; reconnect it first if the server closed it (its end-of-file already read by the
    event loop, no syscall): after a Redis restart every idle connection is such, and the first command on
    each would otherwise fail although the new server answers."""
    reader = connection._reader
    if reader is not None and reader.at_eof():
        await connection.disconnect(nowait=True)
    await connection.connect()


async def connect(url: str, keys: RedisKeys) -> ArqRedis:
    redis = await create_pool(
        redis_settings(url),
        job_serializer=orjson.dumps,
        job_deserializer=orjson.loads,
        default_queue_name=keys.queue,
    )
    checked = redis.connection_pool
    redis.connection_pool = PromptCheckoutPool(
        connection_class=checked.connection_class,
        max_connections=checked.max_connections,
        **checked.connection_kwargs,
    )
    await checked.disconnect()
    return redis


class PackedConnection:
    """A Redis connection of its own, for one caller at a time, sending commands packed by hiredis.

    redis-py's pipeline packs each argument in Python, and its pool checks a connection with a read syscall
    each time it hands it out; on the relay path (a command per chunk) those are most of what a write costs.
    """

    def __init__(self, redis: Redis) -> None:
        self._connection = redis.connection_pool.make_connection()

    async def execute(self, commands: Sequence[Command]) -> list[Any]:
        """Send ``commands`` in one write and return their raw replies (never decoded, no response
        callbacks), an error reply as its ResponseError in its place. A failed connection is reopened by the
        next call."""
        connection = self._connection
        try:
            await connect_afresh_if_closed(connection)
            await connection.send_packed_command(
                b"".join(map(hiredis.pack_command, commands)), check_health=False
            )
            replies: list[Any] = []
            for _ in commands:
                try:
                    replies.append(await connection.read_response(disable_decoding=True))
                except ResponseError as error:
                    replies.append(error)
            return replies
        except BaseException:
            await connection.disconnect(nowait=True)
            raise

    async def close(self) -> None:
        await self._connection.disconnect()
