"""Reading the usage records: the listing of interceptions (paged by cursor), one interception with its
records, and token totals grouped by actor, client, provider, family, model and day."""

from __future__ import annotations

import base64
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared.recording.schema import interceptions, model_thoughts, prompt_usages, token_usages, tool_usages

USAGE_DIMENSIONS = ("actor", "client", "provider", "family", "model", "day")
DEFAULT_USAGE_BY = ("actor", "model", "day")


class InvalidCursor(ValueError):
    """A pagination cursor that this store did not hand out."""


class RecordReads:
    """The queries of ``RecordStore`` (shared/recording/store.py), on its ``engine``."""

    engine: AsyncEngine
    _postgres: bool

    async def list_interceptions(
        self,
        actor: str | None = None,
        model: str | None = None,
        provider: str | None = None,
        family: str | None = None,
        client: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Interceptions newest first (``started_at`` descending, then ``id`` descending), those started
        in [since, until), with each one's token totals; and the cursor of the next page, None after the
        last. Raises InvalidCursor for a cursor this store did not make."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        table = interceptions.c
        query = _matching(
            sa.select(interceptions),
            since,
            until,
            actor_id=actor,
            model=model,
            provider=provider,
            family=family,
            client=client,
        )
        if cursor is not None:
            after_time, after_id = decode_cursor(cursor)
            query = query.where(
                sa.or_(
                    table.started_at < after_time,
                    sa.and_(table.started_at == after_time, table.id < after_id),
                )
            )
        query = query.order_by(table.started_at.desc(), table.id.desc()).limit(limit + 1)
        async with self.engine.connect() as connection:
            rows = (await connection.execute(query)).mappings().all()
            page, more = rows[:limit], len(rows) > limit
            totals = await self._token_totals(connection, [row["id"] for row in page])
        items = [{**_interception(row), **totals.get(row["id"], _NO_TOKENS)} for row in page]
        next_cursor = encode_cursor(page[-1]["started_at"], page[-1]["id"]) if more else None
        return items, next_cursor

    async def _token_totals(self, connection: AsyncConnection, ids: list[str]) -> dict[str, dict[str, int]]:
        if not ids:
            return {}
        tokens = token_usages.c
        query = (
            sa.select(tokens.interception_id, *(sa.func.sum(tokens[key]).label(key) for key in _TOKEN_KEYS))
            .where(tokens.interception_id.in_(ids))
            .group_by(tokens.interception_id)
        )
        return {
            row.interception_id: {key: int(row._mapping[key]) for key in _TOKEN_KEYS}
            for row in (await connection.execute(query)).all()
        }

    async def get_interception(self, interception_id: str) -> dict[str, Any] | None:
        """The interception with its token totals, prompts, token usages, tool usages and thoughts (each
        oldest first), or None."""
        async with self.engine.connect() as connection:
            row = (
                (
                    await connection.execute(
                        sa.select(interceptions).where(interceptions.c.id == interception_id)
                    )
                )
                .mappings()
                .first()
            )
            if row is None:
                return None
            children = {}
            for name, table in (
                ("prompts", prompt_usages),
                ("token_usages", token_usages),
                ("tool_usages", tool_usages),
                ("thoughts", model_thoughts),
            ):
                query = (
                    sa.select(table)
                    .where(table.c.interception_id == interception_id)
                    .order_by(table.c.created_at, table.c.id)
                )
                children[name] = [
                    {str(key): value for key, value in child.items() if key not in ("id", "interception_id")}
                    for child in (await connection.execute(query)).mappings().all()
                ]
        totals = {key: sum(usage[key] for usage in children["token_usages"]) for key in _TOKEN_KEYS}
        return {**_interception(row), **totals, **children}

    async def usage(
        self,
        since: datetime | None = None,
        until: datetime | None = None,
        by: Iterable[str] = DEFAULT_USAGE_BY,
        actor: str | None = None,
        provider: str | None = None,
        family: str | None = None,
        client: str | None = None,
    ) -> list[dict[str, Any]]:
        """Token totals and interception counts of the interceptions started in [since, until) (of that
        ``actor``, ``provider``, ``family`` and ``client`` alone, those given), grouped by any of
        ``actor``, ``client``, ``provider``, ``family``, ``model`` and ``day`` (the UTC day the
        interception started, ``YYYY-MM-DD``).

        A row has the keys of its grouping (``actor_id``, ``client``, ``provider``, ``family``, ``model``,
        ``day``) then ``interceptions``, ``input_tokens``, ``output_tokens``, ``cache_read_tokens``,
        ``cache_write_tokens``. Rows are ordered by day, actor, client, provider, family, model (a missing
        one first). An interception's tokens all count on the day it started.
        """
        dimensions = usage_dimensions(by)
        table, tokens = interceptions.c, token_usages.c
        keys = {
            "actor": table.actor_id,
            "client": table.client,
            "provider": table.provider,
            "family": table.family,
            "model": table.model,
            "day": self._day(table.started_at),
        }
        grouping = [keys[dimension] for dimension in dimensions]
        names = [_USAGE_KEYS[dimension] for dimension in dimensions]
        query = sa.select(
            *(key.label(name) for key, name in zip(grouping, names, strict=True)),
            sa.func.count(sa.distinct(table.id)).label("interceptions"),
            *(sa.func.coalesce(sa.func.sum(tokens[key]), 0).label(key) for key in _TOKEN_KEYS),
        ).select_from(interceptions.outerjoin(token_usages, tokens.interception_id == table.id))
        query = _matching(
            query, since, until, actor_id=actor, provider=provider, family=family, client=client
        )
        if grouping:
            query = query.group_by(*grouping)
        async with self.engine.connect() as connection:
            rows = (await connection.execute(query)).mappings().all()
        result = [
            {
                **{name: row[name] for name in names},
                **{key: int(row[key]) for key in ("interceptions", *_TOKEN_KEYS)},
            }
            for row in rows
        ]
        if not grouping and result and result[0]["interceptions"] == 0:
            return []
        result.sort(
            key=lambda row: tuple((row[name] is not None, row[name] or "") for name in _ORDER if name in row)
        )
        return result

    def _day(self, column: sa.ColumnElement[datetime]) -> sa.ColumnElement[str]:
        # constants as literal SQL, so that PostgreSQL sees the GROUP BY expression equal to the selected one
        if self._postgres:
            utc = sa.func.timezone(sa.literal_column("'UTC'"), column)
            return sa.func.to_char(utc, sa.literal_column("'YYYY-MM-DD'"), type_=sa.Text)
        return sa.func.substr(column, sa.literal_column("1"), sa.literal_column("10"), type_=sa.Text)


_USAGE_KEYS = {
    "actor": "actor_id",
    "client": "client",
    "provider": "provider",
    "family": "family",
    "model": "model",
    "day": "day",
}
_ORDER = ("day", "actor_id", "client", "provider", "family", "model")
_TOKEN_KEYS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")
_NO_TOKENS = dict.fromkeys(_TOKEN_KEYS, 0)


def usage_dimensions(by: Iterable[str] | str) -> tuple[str, ...]:
    """``by`` (names, or one comma-separated string) as distinct dimensions in the order actor, client,
    provider, family, model, day. Raises ValueError for an unknown name."""
    names = [part.strip() for part in by.split(",")] if isinstance(by, str) else [part.strip() for part in by]
    names = [name for name in names if name]
    if unknown := [name for name in names if name not in USAGE_DIMENSIONS]:
        raise ValueError(f"cannot group by {', '.join(unknown)}: use any of {', '.join(USAGE_DIMENSIONS)}")
    return tuple(dimension for dimension in USAGE_DIMENSIONS if dimension in names)


def _matching(
    query: sa.Select[Any], since: datetime | None, until: datetime | None, **equal: str | None
) -> sa.Select[Any]:
    """``query`` of the interceptions started in [since, until) whose columns named in ``equal`` hold the
    values given (None: any)."""
    for name, value in equal.items():
        if value is not None:
            query = query.where(interceptions.c[name] == value)
    if since is not None:
        query = query.where(interceptions.c.started_at >= since)
    if until is not None:
        query = query.where(interceptions.c.started_at < until)
    return query


_INTERCEPTION_COLUMNS = tuple(
    str(column.name) for column in interceptions.columns
)  # plain str, not quoted_name


def _interception(row: Any) -> dict[str, Any]:
    return {name: row[name] for name in _INTERCEPTION_COLUMNS}


def encode_cursor(started_at: datetime, interception_id: str) -> str:
    raw = orjson.dumps([started_at.astimezone(UTC).isoformat(), interception_id])
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        started_at, interception_id = orjson.loads(raw)
        parsed = datetime.fromisoformat(started_at)
        if parsed.tzinfo is None or not isinstance(interception_id, str):
            raise ValueError
    except (ValueError, TypeError, orjson.JSONDecodeError):
        raise InvalidCursor("not a cursor of this listing: pass back the next_cursor of a page") from None
    return parsed, interception_id
