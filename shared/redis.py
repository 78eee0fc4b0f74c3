"""Redis connections: arq's client with JSON (never pickle) job payloads, on one server or a Sentinel-managed
master (see shared/redis_url.py for the URL)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import hiredis
import orjson
from arq.connections import ArqRedis
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection, Connection, SSLConnection, UnixDomainSocketConnection
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.exceptions import RedisError, ResponseError
from redis.typing import EncodableT

from shared.keys import RedisKeys
from shared.redis_url import parse_redis_url

logger = logging.getLogger(__name__)

Command = Sequence[EncodableT]
"""A Redis command as its arguments, as hiredis packs it."""


CONNECT_TIMEOUT = 2.0
RETRY_INTERVAL = 1.0


class PromptCheckout:
    """redis-py's pool, without the read it tries on every connection it hands out.

    That check (``can_read_destructive``) waits a loop iteration for a read that times out at once, while
    holding the pool's lock: on a busy process every command then queues for the lock behind every other one,
    and a worker took seconds to pick up jobs while it streamed hundreds of others. A connection never comes
    back with a reply unread: redis-py drops a connection whose command failed or was cancelled. One the
    server closed (a Redis restart) is reopened before use, from what the event loop already knows."""

    async def ensure_connection(self, connection: AbstractConnection) -> None:
        await connect_afresh_if_closed(connection)


class PromptCheckoutPool(PromptCheckout, ConnectionPool):
    """A pool of connections to one server."""


class PromptCheckoutSentinelPool(PromptCheckout, SentinelConnectionPool):
    """A pool of connections to the master the sentinels name, asked again at each new connection (after a
    failover the connections to the old master fail, and the next ones go to the new master)."""


def connection_pool(url: str, **options: Any) -> ConnectionPool:
    """A pool for the Redis at ``url``; ``options`` go to each connection (e.g. ``socket_timeout``)."""
    target = parse_redis_url(url)
    kwargs: dict[str, Any] = {
        "db": target.db,
        "username": target.username,
        "password": target.password,
        "socket_connect_timeout": CONNECT_TIMEOUT,
        **target.tls_kwargs(),
        **options,
    }
    if target.sentinel:
        sentinels = Sentinel(
            target.addresses, sentinel_kwargs={**target.sentinel_kwargs(), **_socket(kwargs)}
        )
        return PromptCheckoutSentinelPool(target.master, sentinels, ssl=target.tls, **kwargs)
    if target.socket_path is not None:
        return PromptCheckoutPool(
            connection_class=UnixDomainSocketConnection, path=target.socket_path, **kwargs
        )
    ((host, port),) = target.addresses
    connection_class = SSLConnection if target.tls else Connection
    return PromptCheckoutPool(connection_class=connection_class, host=host, port=port, **kwargs)


def _socket(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in kwargs.items() if name.startswith("socket_")}


async def connect_afresh_if_closed(connection: AbstractConnection) -> None:
    """Connect ``connection``; reconnect it first if the server closed it (its end-of-file already read by the
    event loop, no syscall): after a Redis restart every idle connection is such, and the first command on
    each would otherwise fail although the new server answers."""
    reader = connection._reader
    if reader is not None and reader.at_eof():
        await connection.disconnect(nowait=True)
    await connection.connect()


async def connect(url: str, keys: RedisKeys) -> ArqRedis:
    """arq's client for the Redis at ``url``; it connects at its first command (see ``wait_until_answers``)."""
    return ArqRedis(
        connection_pool(url),
        job_serializer=orjson.dumps,
        job_deserializer=orjson.loads,
        default_queue_name=keys.queue,
    )


async def wait_until_answers(redis: Redis, url: str) -> None:
    """Return once Redis answers PING, logging one line per failed attempt, an attempt a second."""
    shown = parse_redis_url(url).masked
    while True:
        try:
            await redis.ping()
        except (RedisError, OSError) as exc:
            logger.warning(
                "Redis at %s does not answer (%s: %s); trying again in %.0fs",
                shown,
                type(exc).__name__,
                exc,
                RETRY_INTERVAL,
            )
            await asyncio.sleep(RETRY_INTERVAL)
        else:
            return


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
