"""How a worker takes jobs off the queue: at once, without scanning jobs that are already running.

arq's own loop polls its sorted set every ``poll_delay`` and re-checks every id it reads, running ones
included, one transaction each: pickup slows as jobs run, and ids past ``queue_read_limit`` are not seen at all.
Here the API also pushes each job id on a pending list; a worker blocks on that list and claims what it pops
(plus, once per ``idle_poll``, any job the list lost) with one script that sets arq's in-progress key.
From there arq runs the job as usual.

Redis errors never end the loop (arq's own ends the worker on the first): each failed attempt logs one line
and the next waits a bounded backoff, so a worker rides through a Redis restart and picks jobs again within
a second of Redis answering.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from arq import Worker
from arq.constants import in_progress_key_prefix, job_key_prefix
from arq.utils import timestamp_ms
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

CLAIM_SCRIPT = """
local ids = {}
local pop = tonumber(ARGV[3])
if pop > 0 then
  local popped = redis.call('LPOP', KEYS[2], pop)
  if popped then for _, id in ipairs(popped) do ids[#ids + 1] = id end end
end
for i = 6, #ARGV do ids[#ids + 1] = ARGV[i] end
local claimed = {}
local expired = {}
local limit = tonumber(ARGV[4])
for _, id in ipairs(ids) do
  if #claimed >= 2 * limit then break end
  local score = redis.call('ZSCORE', KEYS[1], id)
  if score and redis.call('EXISTS', ARGV[5] .. id) == 0 then
    if redis.call('EXISTS', ARGV[2] .. id) == 0 then
      redis.call('ZREM', KEYS[1], id)
      expired[#expired + 1] = id
    end
  elseif score and redis.call('SET', ARGV[2] .. id, '1', 'NX', 'PX', ARGV[1]) then
    claimed[#claimed + 1] = id
    claimed[#claimed + 1] = score
  end
end
return {claimed, expired}
"""

BATCH = 16  # most jobs one worker claims at once, so that a burst spreads over the workers
SWEEP_GRACE_MS = 500
FIRST_BACKOFF = 0.05
MAX_BACKOFF = 1.0


class ListPickupWorker(Worker):
    def __init__(self, *args: Any, pending_key: str, idle_poll: float, **kwargs: Any) -> None:
        super().__init__(*args, poll_delay=0, **kwargs)
        self._pending_key = pending_key
        self._idle_poll = idle_poll
        self._capacity_freed = asyncio.Event()
        self._next_sweep = 0.0
        self._claim: Any = None
        self._backoff = FIRST_BACKOFF

    async def _poll_iteration(self) -> None:
        try:
            await self._take_jobs()
        except (RedisError, OSError) as exc:
            logger.warning("Redis unavailable (%s); picking jobs again in %.2fs", exc, self._backoff)
            await asyncio.sleep(self._backoff)
            self._backoff = min(self._backoff * 2, MAX_BACKOFF)
        else:
            self._backoff = FIRST_BACKOFF

    async def _take_jobs(self) -> None:
        if self._claim is None:
            self._claim = self.pool.register_script(CLAIM_SCRIPT)
        free = self.max_jobs - self.job_counter
        if not self.allow_pick_jobs or free <= 0:
            self._capacity_freed.clear()
            try:
                await asyncio.wait_for(self._capacity_freed.wait(), self._idle_poll)
            except TimeoutError:
                pass
        else:
            await self._pick(min(free, BATCH))
        for job_id, task in list(self.tasks.items()):
            if task.done():
                del self.tasks[job_id]
                failed = None if task.cancelled() else task.exception()
                if isinstance(failed, RedisError):  # arq's own bookkeeping of the job: the worker goes on
                    logger.warning("job %s: Redis failed around it: %s", job_id, failed)
                else:
                    task.result()
        await self.heart_beat()

    async def _pick(self, limit: int) -> None:
        claimed = await self._run_claim(limit, limit, [])
        if not claimed:
            popped = await self.pool.blpop([self._pending_key], timeout=self._idle_poll)
            candidates = [popped[1]] if popped else []
            if time.monotonic() >= self._next_sweep:  # jobs whose pending entry was lost
                self._next_sweep = time.monotonic() + self._idle_poll
                candidates += await self.pool.zrangebyscore(
                    self.queue_name, "-inf", timestamp_ms() - SWEEP_GRACE_MS, start=0, num=10_000
                )
            if candidates:
                claimed = await self._run_claim(limit - 1 if popped else 0, limit, candidates)
        for job_id, score in claimed:
            await self.sem.acquire()
            self.job_counter += 1
            task = self.loop.create_task(self.run_job(job_id, score))
            task.add_done_callback(lambda _: self._release_sem_dec_counter_on_complete())
            self.tasks[job_id] = task

    async def _run_claim(self, pop: int, limit: int, candidates: list[bytes]) -> list[tuple[str, int]]:
        """Pop up to ``pop`` pending ids and, with ``candidates``, claim up to ``limit`` jobs not yet running."""
        ttl_ms = int(self.in_progress_timeout_s * 1000)
        # no due-time check: jobs are never deferred here, so a queued id is due whatever the clocks say
        args = [ttl_ms, in_progress_key_prefix, pop, limit, job_key_prefix, *candidates]
        flat, expired = await self._claim(keys=[self.queue_name, self._pending_key], args=args)
        for job_id in expired:  # its client had its 503 long ago; the script took it off the queue
            logger.warning("job %s expired before a worker took it; dropped", job_id.decode())
        return [(flat[i].decode(), int(float(flat[i + 1]))) for i in range(0, len(flat), 2)]

    async def close(self) -> None:
        """arq's close, save that a Redis that is down skips nothing of the shutdown (the jobs' ends, then
        ``on_shutdown``: records flushed, the stream writer stopped)."""
        if self._pool is None:
            return
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        with contextlib.suppress(RedisError, OSError):
            await self.pool.delete(self.health_check_key)
        if self.on_shutdown:
            await self.on_shutdown(self.ctx)
        await self.pool.close(close_connection_pool=True)
        self._pool = None

    def _release_sem_dec_counter_on_complete(self) -> None:
        super()._release_sem_dec_counter_on_complete()
        self._capacity_freed.set()
