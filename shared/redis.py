"""Redis connections: arq's pool with JSON (never pickle) job payloads."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import hiredis
import orjson
from arq.connections import ArqRedis, RedisSettings, create_pool
from redis.asyncio import Redis
from redis.exceptions import ResponseError
from redis.typing import EncodableT

from shared.keys import RedisKeys


def redis_settings(url: str) -> RedisSettings:
    return RedisSettings.from_dsn(url)


async def connect(url: str, keys: RedisKeys) -> ArqRedis:
    return await create_pool(
        redis_settings(url),
        job_serializer=orjson.dumps,
        job_deserializer=orjson.loads,
        default_queue_name=keys.queue,
    )


class PackedConnection:
    """A Redis connection of its own, for one caller at a time, sending commands packed by hiredis.

    redis-py's pipeline packs each argument in Python, and its pool checks a connection with a read syscall
    each time it hands it out; on the relay path (a command per chunk) those are most of what a write costs.
    """

    def __init__(self, redis: Redis) -> None:
        self._connection = redis.connection_pool.make_connection()

    async def execute(self, commands: Sequence[Sequence[EncodableT]]) -> list[Any]:
        """Send ``commands`` in one write and return their raw replies (never decoded, no response
        callbacks), an error reply as its ResponseError in its place. A failed connection is reopened by the
        next call."""
        connection = self._connection
        try:
            await connection.connect()
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
