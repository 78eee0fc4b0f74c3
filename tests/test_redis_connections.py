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
from worker.stream_writes import CoalescingWriter


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
            # the server closes it (before it answers the KILL): the next call sees that and reconnects first,
            # as after a Redis restart, instead of failing on the dead connection
            await redis.execute_command("CLIENT", "KILL", "ID", own_id)
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


def test_a_pooled_connection_the_server_closed_is_reopened_before_the_next_command(redis_url):
    async def run() -> list[bytes | None]:
        redis = await connect(redis_url, RedisKeys(f"t-{uuid.uuid4().hex[:8]}:"))
        other = await connect(redis_url, RedisKeys(f"t-{uuid.uuid4().hex[:8]}:"))
        key = f"t-{uuid.uuid4().hex}"
        try:
            await redis.set(key, b"kept")
            pooled_id = await redis.client_id()  # the pool's one idle connection
            await other.execute_command("CLIENT", "KILL", "ID", pooled_id)  # as a Redis restart does to all
            answers = [await redis.get(key)]
            answers.append(await redis.get(key))
            await redis.delete(key)
            return answers
        finally:
            await redis.aclose()
            await other.aclose()

    assert asyncio.run(run()) == [b"kept", b"kept"]


def test_a_write_to_a_stream_writer_whose_task_is_gone_fails_at_once(redis_url):
    """The hang after a Redis outage: the worker's tasks cancelled together, a job's cancellation handler
    awaited a write that the cancelled flush task would never send."""

    async def run() -> None:
        redis = await connect(redis_url, RedisKeys(f"t-{uuid.uuid4().hex[:8]}:"))
        writer = CoalescingWriter(redis)
        writer.start()
        try:
            assert await writer.write([(b"PING",)]) == [b"PONG"]
            queued = asyncio.create_task(writer.write([(b"PING",)]))
            writer._task.cancel()  # as asyncio.run cancels every task when the worker's main ends
            async with asyncio.timeout(2):
                with pytest.raises(RedisConnectionError):
                    await queued  # queued before the flush task went: failed, not left waiting
                with pytest.raises(RedisConnectionError):
                    await writer.write([(b"PING",)])  # after: refused at once
        finally:
            await writer.stop()
            await redis.aclose()

    asyncio.run(run())
