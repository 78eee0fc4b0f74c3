"""Usage records in a SQL database: a SQLite file (the embedded default) or PostgreSQL.

Writing is robust to the order records arrive in and to a batch written twice:

* an interception's row is created by whichever of its records is stored first. ``InterceptionStarted``
  is an upsert that (re)writes the start columns and leaves ``ended_at``/``outcome`` alone; any other
  record of an interception without a row creates a placeholder row (``provider``, ``model`` and
  ``streaming`` NULL, ``started_at`` the earliest time the batch knows of it) that a later
  ``InterceptionStarted`` completes; ``InterceptionEnded`` then sets ``ended_at`` and ``outcome``.
* a child row (token, prompt, tool usage) has an id derived from the record's content (a UUIDv5), and is
  inserted with ON CONFLICT DO NOTHING: writing the same record again, in the same batch or a retried
  one, stores it once.
* a batch is one transaction: it is stored whole or not at all.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from shared.recording.records import (
    InterceptionEnded,
    InterceptionStarted,
    PromptUsage,
    Record,
    TokenUsage,
    ToolUsage,
)
from shared.recording.schema import TABLES, interceptions, prompt_usages, token_usages, tool_usages

DEFAULT_URL = "sqlite+aiosqlite:///aibridge.db"
USAGE_DIMENSIONS = ("actor", "model", "day")

_ASYNC_SCHEMES = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
}
_ROW_NAMESPACE = uuid.UUID("6f1c1d4e-2b7a-4e53-9a4c-5d0b8e7f3a21")
_INT64 = (-(2**63), 2**63 - 1)
_START_COLUMNS = ("actor_id", "actor_metadata", "provider", "model", "streaming", "user_agent", "started_at")
_PG_CONNECT_TIMEOUT = 10.0


class InvalidCursor(ValueError):
    """A pagination cursor that this store did not hand out."""


class InvalidRecord(ValueError):
    """A record that no database could store (e.g. a token count beyond 64 bits)."""


def async_url(url: str) -> str:
    """``url`` with the asyncio driver this store uses: ``sqlite://`` becomes ``sqlite+aiosqlite://``,
    ``postgres://`` and ``postgresql://`` become ``postgresql+asyncpg://``. Raises ValueError for any
    other database."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        raise ValueError(f"not a database URL: {url!r}")
    driver = _ASYNC_SCHEMES.get(scheme.lower())
    if driver is None:
        raise ValueError(
            f"unsupported database URL scheme {scheme!r}: use sqlite+aiosqlite:///path/to/file.db "
            "or postgresql+asyncpg://user:password@host/database"
        )
    return f"{driver}://{rest}"


def create_engine(url: str, *, sqlite_busy_timeout: float = 5.0, **options: Any) -> AsyncEngine:
    """An asyncio engine for ``url`` (see ``async_url``), set up for the store.

    SQLite connections enforce foreign keys, use WAL (an API process reads while workers write) and wait
    up to ``sqlite_busy_timeout`` seconds for another process's write lock; PostgreSQL connections are checked before use (a pool
    survives a database restart) and give up connecting after 10 s.
    """
    url = async_url(url)
    if url.startswith("sqlite"):
        engine = create_async_engine(url, **options)
        busy_ms = max(0, round(sqlite_busy_timeout * 1000))

        def pragmas(dbapi_connection: Any, _: Any) -> None:
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute(f"PRAGMA busy_timeout = {busy_ms}")
                cursor.execute("PRAGMA foreign_keys = ON")
                cursor.execute("PRAGMA journal_mode = WAL")
                cursor.execute("PRAGMA synchronous = NORMAL")
            finally:
                cursor.close()

        sa.event.listen(engine.sync_engine, "connect", pragmas)
        return engine
    options.setdefault("pool_pre_ping", True)
    connect_args = {"timeout": _PG_CONNECT_TIMEOUT, **options.pop("connect_args", {})}
    return create_async_engine(url, connect_args=connect_args, **options)


class RecordStore:
    """Reads and writes usage records. The schema must exist: apply ``shared.recording.migrate.upgrade``
    first. ``engine_options`` go to ``create_engine`` (``sqlite_busy_timeout``, SQLAlchemy's pool options)."""

    def __init__(self, url: str, **engine_options: Any) -> None:
        self.engine: AsyncEngine = create_engine(url, **engine_options)
        self._postgres = self.engine.dialect.name == "postgresql"
        self._insert = postgresql.insert if self._postgres else sqlite.insert

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    async def close(self) -> None:
        await self.engine.dispose()

    async def healthy(self) -> bool:
        """Whether the database answers and has the tables (never raises)."""
        try:
            async with self.engine.connect() as connection:
                for table in TABLES:
                    await connection.execute(sa.select(table.c.id).where(sa.false()))
        except Exception:
            return False
        return True

    # -- writing --

    async def write(self, records: Sequence[Record]) -> None:
        """Stores ``records`` in one transaction. Raises InvalidRecord (before touching the database) for
        a record no database could hold, and the database's errors as they come."""
        plan = _Plan(records, scrub=self._postgres)
        if plan.empty:
            return
        async with self.engine.begin() as connection:
            await self._apply(connection, plan)

    async def _apply(self, connection: AsyncConnection, plan: _Plan) -> None:
        if plan.starts:
            insert = self._insert(interceptions)
            upsert = insert.on_conflict_do_update(
                index_elements=[interceptions.c.id],
                set_={name: insert.excluded[name] for name in _START_COLUMNS},
            )
            await connection.execute(upsert, list(plan.starts.values()))
        if placeholders := plan.placeholders():
            insert = self._insert(interceptions).on_conflict_do_nothing(index_elements=[interceptions.c.id])
            await connection.execute(insert, placeholders)
        if plan.ends:
            end = (
                sa.update(interceptions)
                .where(interceptions.c.id == sa.bindparam("end_id"))
                .values(
                    ended_at=sa.bindparam("end_at", type_=interceptions.c.ended_at.type),
                    outcome=sa.bindparam("end_outcome", type_=sa.Text),
                )
            )
            await connection.execute(end, list(plan.ends.values()))
        for table, rows in plan.children.items():
            if rows:
                insert = self._insert(table).on_conflict_do_nothing(index_elements=[table.c.id])
                await connection.execute(insert, list(rows.values()))

    # -- reading --

    async def list_interceptions(
        self,
        actor: str | None = None,
        model: str | None = None,
        provider: str | None = None,
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
        query = sa.select(interceptions)
        for column, value in ((table.actor_id, actor), (table.model, model), (table.provider, provider)):
            if value is not None:
                query = query.where(column == value)
        query = _time_range(query, since, until)
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
            sa.select(
                tokens.interception_id,
                sa.func.sum(tokens.input_tokens),
                sa.func.sum(tokens.output_tokens),
                sa.func.sum(tokens.cache_read_tokens),
            )
            .where(tokens.interception_id.in_(ids))
            .group_by(tokens.interception_id)
        )
        return {
            row[0]: {
                "input_tokens": int(row[1]),
                "output_tokens": int(row[2]),
                "cache_read_tokens": int(row[3]),
            }
            for row in (await connection.execute(query)).all()
        }

    async def get_interception(self, interception_id: str) -> dict[str, Any] | None:
        """The interception with its token totals, prompts, token usages and tool usages (each oldest
        first), or None."""
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
        totals = {
            key: sum(usage[key] for usage in children["token_usages"])
            for key in ("input_tokens", "output_tokens", "cache_read_tokens")
        }
        return {**_interception(row), **totals, **children}

    async def usage(
        self,
        since: datetime | None = None,
        until: datetime | None = None,
        by: Iterable[str] = USAGE_DIMENSIONS,
        actor: str | None = None,
    ) -> list[dict[str, Any]]:
        """Token totals and interception counts of the interceptions started in [since, until) (by ``actor``
        alone when given), grouped by any of ``actor``, ``model`` and ``day`` (the UTC day the interception
        started, ``YYYY-MM-DD``).

        A row has the keys of its grouping (``actor_id``, ``model``, ``day``) then ``interceptions``,
        ``input_tokens``, ``output_tokens``, ``cache_read_tokens``. Rows are ordered by day, actor, model
        (a missing actor or model first). An interception's tokens all count on the day it started.
        """
        dimensions = usage_dimensions(by)
        table, tokens = interceptions.c, token_usages.c
        keys = {"actor": table.actor_id, "model": table.model, "day": self._day(table.started_at)}
        grouping = [keys[dimension] for dimension in dimensions]
        names = [_USAGE_KEYS[dimension] for dimension in dimensions]
        query = sa.select(
            *(key.label(name) for key, name in zip(grouping, names, strict=True)),
            sa.func.count(sa.distinct(table.id)).label("interceptions"),
            sa.func.coalesce(sa.func.sum(tokens.input_tokens), 0).label("input_tokens"),
            sa.func.coalesce(sa.func.sum(tokens.output_tokens), 0).label("output_tokens"),
            sa.func.coalesce(sa.func.sum(tokens.cache_read_tokens), 0).label("cache_read_tokens"),
        ).select_from(interceptions.outerjoin(token_usages, tokens.interception_id == table.id))
        query = _time_range(query, since, until)
        if actor is not None:
            query = query.where(table.actor_id == actor)
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


_USAGE_KEYS = {"actor": "actor_id", "model": "model", "day": "day"}
_ORDER = ("day", "actor_id", "model")
_TOKEN_KEYS = ("input_tokens", "output_tokens", "cache_read_tokens")
_NO_TOKENS = dict.fromkeys(_TOKEN_KEYS, 0)


def usage_dimensions(by: Iterable[str] | str) -> tuple[str, ...]:
    """``by`` (names, or one comma-separated string) as distinct dimensions in the order actor, model,
    day. Raises ValueError for an unknown name."""
    names = [part.strip() for part in by.split(",")] if isinstance(by, str) else [part.strip() for part in by]
    names = [name for name in names if name]
    if unknown := [name for name in names if name not in USAGE_DIMENSIONS]:
        raise ValueError(f"cannot group by {', '.join(unknown)}: use any of {', '.join(USAGE_DIMENSIONS)}")
    return tuple(dimension for dimension in USAGE_DIMENSIONS if dimension in names)


def _time_range(query: sa.Select[Any], since: datetime | None, until: datetime | None) -> sa.Select[Any]:
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


# -- planning one batch --


class _Plan:
    """One batch as rows: the starts, ends, placeholders and children to write, in the batch's order
    (the last of two starts or ends of one interception wins)."""

    def __init__(self, records: Sequence[Record], *, scrub: bool) -> None:
        self._scrub = _scrub_nul if scrub else _same
        self.starts: dict[str, dict[str, Any]] = {}
        self.ends: dict[str, dict[str, Any]] = {}
        self.children: dict[sa.Table, dict[str, dict[str, Any]]] = {
            token_usages: {},
            prompt_usages: {},
            tool_usages: {},
        }
        self._first_seen: dict[str, datetime] = {}
        for record in records:
            self._add(record)

    @property
    def empty(self) -> bool:
        return not self._first_seen

    def placeholders(self) -> list[dict[str, Any]]:
        return [
            {"id": interception_id, "actor_metadata": {}, "started_at": seen}
            for interception_id, seen in self._first_seen.items()
            if interception_id not in self.starts
        ]

    def _seen(self, interception_id: str, at: datetime) -> None:
        at = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
        known = self._first_seen.get(interception_id)
        if known is None or at < known:
            self._first_seen[interception_id] = at

    def _add(self, record: Record) -> None:
        interception_id = self._scrub(record.interception_id)
        match record:
            case InterceptionStarted():
                self.starts[interception_id] = self._scrub(
                    {
                        "id": interception_id,
                        "actor_id": record.actor_id,
                        "actor_metadata": dict(record.actor_metadata),
                        "provider": record.provider,
                        "model": record.model,
                        "streaming": record.streaming,
                        "user_agent": record.user_agent,
                        "started_at": record.started_at,
                    }
                )
                self._seen(interception_id, record.started_at)
            case InterceptionEnded():
                self.ends[interception_id] = {
                    "end_id": interception_id,
                    "end_at": record.ended_at,
                    "end_outcome": str(record.outcome),
                }
                self._seen(interception_id, record.ended_at)
            case TokenUsage():
                for count in (record.input, record.output, record.cache_read_input, *record.extra.values()):
                    if not _INT64[0] <= count <= _INT64[1]:
                        raise InvalidRecord(
                            f"token count {count} of interception {interception_id} is out of range"
                        )
                self._child(
                    token_usages,
                    record,
                    {
                        "input_tokens": record.input,
                        "output_tokens": record.output,
                        "cache_read_tokens": record.cache_read_input,
                        "extra": dict(record.extra),
                    },
                )
            case PromptUsage():
                self._child(prompt_usages, record, {"prompt": record.prompt})
            case ToolUsage():
                self._child(
                    tool_usages,
                    record,
                    {
                        "tool_call_id": record.tool_call_id,
                        "server_url": record.server_url,
                        "tool": record.tool,
                        "args": record.args,
                        "injected": record.injected,
                        "invocation_error": record.invocation_error,
                    },
                )
            case _:
                raise InvalidRecord(f"not a usage record: {type(record).__name__}")

    def _child(
        self, table: sa.Table, record: TokenUsage | PromptUsage | ToolUsage, fields: dict[str, Any]
    ) -> None:
        interception_id = self._scrub(record.interception_id)
        row_id = str(uuid.uuid5(_ROW_NAMESPACE, _canonical(record)))
        self.children[table][row_id] = self._scrub(
            {
                "id": row_id,
                "interception_id": interception_id,
                "msg_id": record.msg_id,
                **fields,
                "created_at": record.created_at,
            }
        )
        self._seen(interception_id, record.created_at)


def _canonical(record: Record) -> str:
    try:
        return orjson.dumps(record.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS).decode()
    except TypeError as exc:  # e.g. tool arguments that are not JSON
        raise InvalidRecord(f"record of interception {record.interception_id} is not JSON: {exc}") from None


def _same(value: Any) -> Any:
    return value


def _scrub_nul(value: Any) -> Any:
    """PostgreSQL text and jsonb cannot hold U+0000: it becomes U+FFFD."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd") if "\x00" in value else value
    if isinstance(value, dict):
        return {_scrub_nul(key): _scrub_nul(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub_nul(item) for item in value]
    return value
