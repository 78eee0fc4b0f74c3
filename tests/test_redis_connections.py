"""The gateway's Redis connections against a real server: the pool hands out connections without a read
check, and the packed connection of the relay path, so neither may ever hand back another command's reply."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from shared.keys import RedisKeys
from shared.redis import PackedConnection, PromptCheckoutPool, connect


def test_a_command_cancelled_mid_reply_leaves_no_stale_reply_for_the_next_user_of_its_connection(redis_url):
    async def run() -> list[bytes | None]:
        redis = await connect(redis_url, RedisKeys(f"t-{uuid.uuid4().hex[:8]}:"))
        try:
            assert isinstance(redis.connection_pool, PromptCheckoutPool)
            key = f"t-{uuid.uuid4().hex}"
            waiting = asyncio.create_task(redis.blpop([key + ":list"], timeout=5))
            await asyncio.sleep(0.2)  # the BLPOP is on its connection, its reply still to come
            waiting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiting
            await redis.rpush(key + ":list", b"late")  # the reply the cancelled BLPOP would have read
            await redis.set(key, b"mine")
            answers = [await redis.get(key) for _ in range(5)]
            await redis.delete(key, key + ":list")
            return answers
        finally:
            await redis.aclose()

    assert asyncio.run(run()) == [b"mine"] * 5


def test_packed_commands_answer_in_order_with_errors_in_place_and_survive_a_dropped_connection(redis_url):
    async def run() -> tuple[list[object], list[object]]:
        redis = await connect(redis_url, RedisKeys(f"t-{uuid.uuid4().hex[:8]}:"))
        packed = PackedConnection(redis)
        key = f"t-{uuid.uuid4().hex}"
        try:
            first = await packed.execute(
                [(b"SET", key, b"1"), (b"INCR", key + ":s"), (b"LPUSH", key, b"x"), (b"GET", key)]
            )
            ((own_id,),) = [await packed.execute([(b"CLIENT", b"ID")])]
            await redis.execute_command("CLIENT", "KILL", "ID", own_id)
            with pytest.raises(RedisConnectionError):
                await packed.execute([(b"PING",)])  # the server closed it; the next call reconnects
            second = await packed.execute([(b"INCR", key + ":s"), (b"GET", key)])
            await redis.delete(key, key + ":s")
            return first, second
        finally:
            await packed.close()
            await redis.aclose()

    first, second = asyncio.run(run())
    assert first[:2] == [b"OK", 1]
    assert isinstance(first[2], ResponseError)  # WRONGTYPE, in its own place
    assert first[3] == b"1"
    assert second == [2, b"1"]
