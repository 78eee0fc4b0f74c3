"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
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
