"""Redis connections: arq's pool with JSON (never pickle) job payloads."""

from __future__ import annotations

import orjson
from arq.connections import ArqRedis, RedisSettings, create_pool

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
