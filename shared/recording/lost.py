"""Ending the interceptions of workers that died: their started record marked them open (see
shared/recording/outbox.py) and no ended record came. Each gets one, outcome ``worker_lost``, at the time
this is noticed (within ``heartbeat_timeout`` and a sweep of the death)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from redis.asyncio import Redis

from shared.keys import RedisKeys
from shared.recording.outbox import FIELD
from shared.recording.records import InterceptionEnded, Outcome

# KEYS: the open hash, the outbox; ARGV: the outbox's cap, its record field, then (interception, worker,
# record) triples.
# Atomic, so that of the workers sweeping at once only one ends each interception.
_END_LOST = """
local ended = 0
for i = 3, #ARGV, 3 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    redis.call('HDEL', KEYS[1], ARGV[i])
    redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[1], '*', ARGV[2], ARGV[i + 2])
    ended = ended + 1
  end
end
return ended
"""


async def end_lost_interceptions(redis: Redis, keys: RedisKeys, heartbeat_timeout: float, maxlen: int) -> int:
    """Appends an ended record (``worker_lost``) for each open interception whose worker has sent no
    heartbeat for ``heartbeat_timeout`` seconds; returns how many."""
    open_interceptions = await redis.hgetall(keys.open_interceptions)
    if not open_interceptions:
        return 0
    now = time.time()
    heartbeats = dict(await redis.zrange(keys.workers, 0, -1, withscores=True))
    arguments: list[bytes | str | int] = [maxlen, FIELD]
    for interception_id, worker_id in open_interceptions.items():
        last = heartbeats.get(worker_id)
        if last is not None and last >= now - heartbeat_timeout:
            continue
        ended = InterceptionEnded(
            interception_id=interception_id.decode(),
            ended_at=datetime.fromtimestamp(now, UTC),
            outcome=Outcome.WORKER_LOST,
        )
        arguments += [interception_id, worker_id, ended.model_dump_json()]
    if len(arguments) == 2:
        return 0
    return int(await redis.eval(_END_LOST, 2, keys.open_interceptions, keys.records, *arguments))
