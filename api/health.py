"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError

from api.state import State
from shared.status import read_status

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
    status = await read_status(state.redis, state.keys, state.settings.heartbeat_timeout)
    state.metrics.queue_depth.set(status.waiting)
    state.metrics.jobs_in_progress.set(status.in_progress)
    state.metrics.live_workers.set(status.live_workers)
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
