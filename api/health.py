"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError

from api.state import State

router = APIRouter()


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(state: State) -> JSONResponse:
    try:
        workers = await state.live_workers()
    except RedisError:
        return JSONResponse({"status": "unready", "redis": False, "workers": 0}, 503)
    ready = workers > 0
    return JSONResponse(
        {"status": "ready" if ready else "unready", "redis": True, "workers": workers}, 200 if ready else 503
    )


@router.get("/metrics")
async def metrics(state: State) -> Response:
    """Prometheus metrics; queue depth, running jobs and live workers are read from Redis at each scrape."""
    async with state.redis.pipeline(transaction=False) as pipe:
        pipe.llen(state.keys.pending)
        pipe.zcard(state.keys.queue)
        waiting, queued = await pipe.execute()
    state.metrics.queue_depth.set(waiting)
    state.metrics.jobs_in_progress.set(max(0, queued - waiting))
    state.metrics.live_workers.set(await state.live_workers())
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
