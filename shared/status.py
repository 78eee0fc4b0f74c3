"""``aibridge status``: one screen for an operator, read from Redis."""

from __future__ import annotations

import time
from dataclasses import dataclass

from redis.asyncio import Redis

from shared.keys import RedisKeys


@dataclass(frozen=True)
class WorkerStatus:
    worker_id: str
    host: str
    pid: str
    jobs: int
    last_heartbeat: float


@dataclass(frozen=True)
class Status:
    waiting: int
    in_progress: int
    oldest_waiting_since: float | None
    workers: list[WorkerStatus]
    live_workers: int


async def read_status(redis: Redis, keys: RedisKeys, heartbeat_timeout: float) -> Status:
    """What the queue and the workers are doing. Jobs in progress are those the live workers announced with
    their last heartbeat: a job whose worker died (its queue entry and arq's in-progress key outlive it for
    up to ``job_timeout``) stops counting once that worker's heartbeat is ``heartbeat_timeout`` old."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.llen(keys.pending)
        pipe.lindex(keys.pending, 0)
        pipe.zrange(keys.workers, 0, -1, withscores=True)
        waiting, oldest_id, announced = await pipe.execute()
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zscore(keys.queue, oldest_id or b"")
        for worker_id, _ in announced:
            pipe.hgetall(keys.worker(worker_id.decode()))
        oldest_score, *descriptions = await pipe.execute()
    workers = [
        WorkerStatus(
            worker_id=worker_id.decode(),
            host=description.get(b"host", b"?").decode(),
            pid=description.get(b"pid", b"?").decode(),
            jobs=int(description.get(b"jobs", 0)),
            last_heartbeat=heartbeat,
        )
        for (worker_id, heartbeat), description in zip(announced, descriptions, strict=True)
    ]
    now = time.time()
    live = [worker for worker in workers if now - worker.last_heartbeat <= heartbeat_timeout]
    return Status(
        waiting=waiting,
        in_progress=sum(worker.jobs for worker in live),
        oldest_waiting_since=oldest_score / 1000 if oldest_score is not None else None,
        workers=workers,
        live_workers=len(live),
    )


def format_status(status: Status, heartbeat_timeout: float, now: float | None = None) -> str:
    now = time.time() if now is None else now
    oldest = (
        f"{now - status.oldest_waiting_since:.1f}s ago" if status.oldest_waiting_since is not None else "none"
    )
    lines = [
        f"queue depth       {status.waiting}",
        f"jobs in progress  {status.in_progress}",
        f"oldest waiting    {oldest}",
        f"live workers      {status.live_workers}",
        "",
    ]
    if not status.workers:
        return "\n".join([*lines, "no workers have announced themselves"])
    rows = [("WORKER", "HOST", "PID", "JOBS", "LAST HEARTBEAT", "STATE")]
    for worker in sorted(status.workers, key=lambda w: -w.last_heartbeat):
        age = now - worker.last_heartbeat
        state = "live" if age <= heartbeat_timeout else "silent"
        rows.append((worker.worker_id, worker.host, worker.pid, str(worker.jobs), f"{age:.1f}s ago", state))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines += [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    return "\n".join(lines)
