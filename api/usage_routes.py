"""Routes under /api/v1 that read the usage records: interceptions, one interception, token totals.

With client keys, a caller sees the records of its own actor only."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import SQLAlchemyError

from api.auth import Caller
from shared.errors import error_object
from shared.recording.reads import DEFAULT_USAGE_BY, InvalidCursor, usage_dimensions
from shared.recording.store import RecordStore
from shared.recording.times import parse_time

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1")

MAX_LIMIT = 200
DEFAULT_LIMIT = 50


async def record_store(request: Request) -> RecordStore:  # async: a sync dependency would run in a thread
    return request.app.state.aibridge_records


Records = Annotated[RecordStore, Depends(record_store)]


class InvalidQuery(Exception):
    """A query parameter the routes refuse (HTTP 400)."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body, option=orjson.OPT_UTC_Z), status, media_type="application/json")


def _invalid(exc: InvalidQuery) -> Response:
    body = error_object(exc.message, "invalid_request_error", "invalid_query")
    body["error"]["param"] = exc.param
    return JSONResponse(body, 400)


def _unavailable(exc: Exception) -> Response:
    logger.warning("usage records unavailable: %s", type(getattr(exc, "orig", None) or exc).__name__)
    body = error_object("the usage records are unavailable", "server_error", "records_unavailable")
    return JSONResponse(body, 503, headers={"Retry-After": "5"})


def _time(value: str | None, param: str) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_time(value)
    except ValueError as exc:
        raise InvalidQuery(f"'{param}': {exc}", param) from None


def _range(since: str | None, until: str | None) -> tuple[datetime | None, datetime | None]:
    start, end = _time(since, "since"), _time(until, "until")
    if start is not None and end is not None and start >= end:
        raise InvalidQuery("'since' must be before 'until'", "since")
    return start, end


def _limit(value: str | None) -> int:
    if value is None:
        return DEFAULT_LIMIT
    try:
        limit = int(value)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidQuery(f"'limit' must be an integer from 1 to {MAX_LIMIT}", "limit")
    return limit


@router.get("/interceptions")
async def list_interceptions(
    store: Records,
    caller: Caller,
    actor: str | None = None,
    model: str | None = None,
    provider: str | None = None,
    family: str | None = None,
    client: str | None = None,
    since: str | None = None,
    until: str | None = None,
    cursor: str | None = None,
    limit: str | None = None,
) -> Response:
    """Interceptions newest first; ``since``/``until`` are ISO-8601 times or durations before now (``7d``)."""
    try:
        start, end = _range(since, until)
        page_size = _limit(limit)
        try:
            items, next_cursor = await store.list_interceptions(
                actor=caller.id if caller else actor,
                model=model,
                provider=provider,
                family=family,
                client=client,
                since=start,
                until=end,
                cursor=cursor,
                limit=page_size,
            )
        except InvalidCursor as exc:
            raise InvalidQuery(str(exc), "cursor") from None
    except InvalidQuery as exc:
        return _invalid(exc)
    except (SQLAlchemyError, OSError) as exc:
        return _unavailable(exc)
    return _json({"data": items, "next_cursor": next_cursor})


@router.get("/interceptions/{interception_id}")
async def get_interception(interception_id: str, store: Records, caller: Caller) -> Response:
    try:
        interception = await store.get_interception(interception_id)
    except (SQLAlchemyError, OSError) as exc:
        return _unavailable(exc)
    if interception is None or (caller is not None and interception["actor_id"] != caller.id):
        body = error_object(f"no interception {interception_id!r}", "invalid_request_error", "not_found")
        return JSONResponse(body, 404)
    return _json(interception)


@router.get("/usage")
async def usage(
    store: Records,
    caller: Caller,
    since: str | None = None,
    until: str | None = None,
    by: str | None = None,
    provider: str | None = None,
    family: str | None = None,
    client: str | None = None,
) -> Response:
    """Token totals and interception counts grouped by ``by``: a comma list of actor, client, provider,
    family, model and day (the UTC day the interception started); actor, model and day by default."""
    try:
        start, end = _range(since, until)
        try:
            dimensions = DEFAULT_USAGE_BY if by is None else usage_dimensions(by)
        except ValueError as exc:
            raise InvalidQuery(f"'by': {exc}", "by") from None
        rows = await store.usage(
            since=start,
            until=end,
            by=dimensions,
            actor=caller.id if caller else None,
            provider=provider,
            family=family,
            client=client,
        )
    except InvalidQuery as exc:
        return _invalid(exc)
    except (SQLAlchemyError, OSError) as exc:
        return _unavailable(exc)
    return _json({"data": rows})
