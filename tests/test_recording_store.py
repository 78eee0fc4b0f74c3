"""The usage records' store, migrations, outbox, read API and report, against SQLite and
PostgreSQL (``AIBRIDGE_TEST_POSTGRES_URL``, else the local server; its tests skip when none answers)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from fastapi import FastAPI
from fastapi.testclient import TestClient
from redis.asyncio import Redis
from sqlalchemy.exc import DBAPIError

from api.usage_routes import router as usage_router
from shared.clients import Client
from shared.families import Family
from shared.keys import RedisKeys
from shared.local import free_port
from shared.recording.drain import GROUP, RecordDrainer
from shared.recording.engine import async_url, create_engine
from shared.recording.lost import end_lost_interceptions
from shared.recording.migrate import HEAD, VERSION_TABLE, current_revision, upgrade
from shared.recording.outbox import OutboxRecorder
from shared.recording.reads import InvalidCursor
from shared.recording.records import (
    InterceptionEnded,
    InterceptionStarted,
    ModelThought,
    Outcome,
    PromptUsage,
    TokenUsage,
    ToolUsage,
)
from shared.recording.report import ReportError, format_usage_table, usage_report
from shared.recording.schema import metadata
from shared.recording.store import RecordStore
from shared.recording.times import parse_time
from shared.recording.writes import InvalidRecord
from worker.stream_writes import CoalescingWriter

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
PG_URL = os.environ.get("AIBRIDGE_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
RECORDING_LOGGERS = ("shared.recording.record_writer", "shared.recording.drain", "shared.recording.outbox")


def run(coro: Awaitable[Any], timeout: float = 30) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def wait_until(predicate: Callable[[], bool], within: float = 5) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.01)


async def wait_until_true(read: Callable[[], Awaitable[Any]], expected: Any, within: float = 5) -> None:
    """Until ``await read()`` is ``expected``."""
    deadline = time.monotonic() + within
    while (got := await read()) != expected:
        assert time.monotonic() < deadline, f"timed out waiting: {got!r}, not {expected!r}"
        await asyncio.sleep(0.01)


def s(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)


# -- databases --


@pytest.fixture(scope="module")
def postgres_server() -> str:
    """The PostgreSQL server's URL (asyncpg driver), or a skip with the reason."""
    url = async_url(PG_URL)

    async def probe() -> None:
        connection = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"), timeout=5)
        await connection.close()

    try:
        run(probe(), 10)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        pytest.skip(f"no PostgreSQL reachable at {url} ({exc!r}); set AIBRIDGE_TEST_POSTGRES_URL")
    return url


async def _admin(server_url: str, statement: str) -> None:
    connection = await asyncpg.connect(
        server_url.replace("postgresql+asyncpg://", "postgresql://"), timeout=5
    )
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@pytest.fixture(params=["sqlite", "postgres"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of the test's own: a SQLite file to be, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'records.db'}"
        return
    server = request.getfixturevalue("postgres_server")
    name = f"aibridge_records_{uuid.uuid4().hex[:12]}"
    run(_admin(server, f"CREATE DATABASE {name}"))
    try:
        yield sa.make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        run(_admin(server, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest.fixture
def db_url(empty_url: str) -> str:
    """A migrated, empty database."""
    run(upgrade(empty_url))
    return empty_url


def is_postgres(url: str) -> bool:
    return url.startswith("postgresql")


@asynccontextmanager
async def opened(url: str, **options: Any) -> AsyncIterator[RecordStore]:
    store = RecordStore(url, **options)
    try:
        yield store
    finally:
        await store.close()


# -- records --


def started(iid: str, at: datetime = T0, actor: str | None = "alice", model: str = "gpt-4o", **fields: Any):
    defaults = {
        "provider": "openai",
        "streaming": True,
        "user_agent": "openai-python/1.0",
        "actor_metadata": {},
    }
    return InterceptionStarted(
        interception_id=iid, actor_id=actor, model=model, started_at=at, **{**defaults, **fields}
    )


def tokens(
    iid: str, msg: str, at: datetime, inp: int, out: int, cached: int = 0, written: int = 0, **extra: int
) -> TokenUsage:
    return TokenUsage(
        interception_id=iid,
        msg_id=msg,
        input=inp,
        output=out,
        cache_read_input=cached,
        cache_write_input=written,
        extra=extra,
        created_at=at,
    )


def one_interception(iid: str) -> list[Any]:
    return [
        started(iid, actor_metadata={"team": "core", "email": "alice@example.com"}),
        PromptUsage(interception_id=iid, msg_id="msg-1", prompt="what is 2+2?", created_at=T0 + s(1)),
        ModelThought(interception_id=iid, msg_id="msg-1", content="2 and 2: add", created_at=T0 + s(1.5)),
        tokens(iid, "msg-1", T0 + s(2), 100, 20, 30, completion_reasoning=5, prompt_cached=30),
        ToolUsage(
            interception_id=iid,
            msg_id="msg-1",
            tool_call_id="call-1",
            server_url="http://mcp.local/mcp",
            tool="add",
            args={"a": 1, "b": [2, 3]},
            injected=True,
            created_at=T0 + s(3),
        ),
        ToolUsage(
            interception_id=iid,
            msg_id="msg-2",
            tool_call_id="call-2",
            tool="client_tool",
            args="not { json",
            injected=False,
            invocation_error="boom",
            created_at=T0 + s(4),
        ),
        tokens(iid, "msg-2", T0 + s(5), 50, 7, written=12),
        InterceptionEnded(interception_id=iid, ended_at=T0 + s(6), outcome=Outcome.OK, key_hint="sk-...abcd"),
    ]


ONE_INTERCEPTION = len(one_interception("count"))


def expected_interception(iid: str) -> dict[str, Any]:
    return {
        "id": iid,
        "actor_id": "alice",
        "actor_metadata": {"team": "core", "email": "alice@example.com"},
        "family": "openai_chat",
        "provider": "openai",
        "model": "gpt-4o",
        "streaming": True,
        "user_agent": "openai-python/1.0",
        "client": "unknown",
        "session_id": None,
        "started_at": T0,
        "ended_at": T0 + s(6),
        "outcome": "ok",
        "key_hint": "sk-...abcd",
        "input_tokens": 150,
        "output_tokens": 27,
        "cache_read_tokens": 30,
        "cache_write_tokens": 12,
        "prompts": [{"msg_id": "msg-1", "prompt": "what is 2+2?", "created_at": T0 + s(1)}],
        "thoughts": [{"msg_id": "msg-1", "content": "2 and 2: add", "created_at": T0 + s(1.5)}],
        "token_usages": [
            {
                "msg_id": "msg-1",
                "input_tokens": 100,
                "output_tokens": 20,
                "cache_read_tokens": 30,
                "cache_write_tokens": 0,
                "extra": {"completion_reasoning": 5, "prompt_cached": 30},
                "created_at": T0 + s(2),
            },
            {
                "msg_id": "msg-2",
                "input_tokens": 50,
                "output_tokens": 7,
                "cache_read_tokens": 0,
                "cache_write_tokens": 12,
                "extra": {},
                "created_at": T0 + s(5),
            },
        ],
        "tool_usages": [
            {
                "msg_id": "msg-1",
                "tool_call_id": "call-1",
                "server_url": "http://mcp.local/mcp",
                "tool": "add",
                "args": {"a": 1, "b": [2, 3]},
                "injected": True,
                "invocation_error": None,
                "created_at": T0 + s(3),
            },
            {
                "msg_id": "msg-2",
                "tool_call_id": "call-2",
                "server_url": None,
                "tool": "client_tool",
                "args": "not { json",
                "injected": False,
                "invocation_error": "boom",
                "created_at": T0 + s(4),
            },
        ],
    }


def assert_utc(value: dict[str, Any]) -> None:
    for key in ("started_at", "ended_at"):
        if value[key] is not None:
            assert value[key].utcoffset() == timedelta(0), key


# -- migrations --


def test_upgrade_is_concurrent_safe_idempotent_and_matches_the_schema(empty_url: str) -> None:
    async def body() -> None:
        assert await current_revision(empty_url) is None
        await asyncio.gather(upgrade(empty_url), upgrade(empty_url), upgrade(empty_url))
        await upgrade(empty_url)
        assert await current_revision(empty_url) == HEAD
        async with opened(empty_url) as store:
            assert await store.healthy()
            async with store.engine.connect() as connection:
                differences = await connection.run_sync(
                    lambda sync: compare_metadata(
                        MigrationContext.configure(
                            sync, opts={"version_table": VERSION_TABLE, "compare_type": True}
                        ),
                        metadata,
                    )
                )
                tables = await connection.run_sync(lambda sync: sorted(sa.inspect(sync).get_table_names()))
        assert differences == []
        assert tables == [
            "aibridge_alembic_version",
            "client_keys",
            "interceptions",
            "model_thoughts",
            "prompt_usages",
            "token_usages",
            "tool_usages",
        ]

    run(body())


def test_migrations_ship_inside_the_package() -> None:
    import shared.recording.migrations.versions as versions

    assert (Path(versions.__file__).parent / "0001_initial.py").is_file()
    assert (Path(versions.__file__).parent.parent / "env.py").is_file()


# -- writing and reading back --


def test_a_batch_reads_back_exactly(db_url: str) -> None:
    async def body() -> None:
        async with opened(db_url) as store:
            await store.write(one_interception("i-1"))
            got = await store.get_interception("i-1")
            assert got == expected_interception("i-1")
            assert_utc(got)
            assert await store.get_interception("i-missing") is None
            items, cursor = await store.list_interceptions()
            assert cursor is None
            detail = expected_interception("i-1")
            assert items == [{key: detail[key] for key in items[0]}]
            assert set(items[0]) == set(detail) - {"prompts", "token_usages", "tool_usages", "thoughts"}

    run(body())


def test_any_order_and_retried_batches(db_url: str) -> None:
    async def body() -> None:
        async with opened(db_url) as store:
            # an end and a token usage before the start: a placeholder row, completed by the start later
            early = [
                tokens("x", "m1", T0 + s(5), 10, 1),
                InterceptionEnded(interception_id="x", ended_at=T0 + s(9), outcome=Outcome.UPSTREAM_ERROR),
            ]
            await store.write(early)
            got = await store.get_interception("x")
            assert {
                key: got[key]
                for key in ("family", "provider", "model", "streaming", "actor_id", "actor_metadata")
            } == {
                "family": None,
                "provider": None,
                "model": None,
                "streaming": None,
                "actor_id": None,
                "actor_metadata": {},
            }
            assert (got["started_at"], got["ended_at"], got["outcome"]) == (
                T0 + s(5),
                T0 + s(9),
                "upstream_error",
            )

            late = [started("x", actor="bob")]
            await store.write(late)
            await store.write(early)  # retried batches: stored once
            await store.write(late)
            got = await store.get_interception("x")
            assert (got["actor_id"], got["provider"], got["model"], got["streaming"]) == (
                "bob",
                "openai",
                "gpt-4o",
                True,
            )
            assert (got["started_at"], got["ended_at"], got["outcome"]) == (T0, T0 + s(9), "upstream_error")
            assert [usage["input_tokens"] for usage in got["token_usages"]] == [10]

            # one batch in reverse order; a record twice; two starts (the last wins)
            usage = tokens("y", "m1", T0 + s(1), 3, 4)
            await store.write(
                [
                    InterceptionEnded(interception_id="y", ended_at=T0 + s(2), outcome=Outcome.CLIENT_GONE),
                    usage,
                    usage,
                    tokens("y", "m1", T0 + s(1.5), 5, 6),  # same message, another record: kept
                    started("y", model="first"),
                    started("y", model="second"),
                ]
            )
            got = await store.get_interception("y")
            assert (got["model"], got["outcome"], got["ended_at"]) == ("second", "client_gone", T0 + s(2))
            assert [(u["input_tokens"], u["output_tokens"]) for u in got["token_usages"]] == [(3, 4), (5, 6)]

            # text PostgreSQL cannot hold is stored with U+FFFD instead of U+0000
            await store.write([PromptUsage(interception_id="z", msg_id="m", prompt="a\x00b", created_at=T0)])
            prompt = (await store.get_interception("z"))["prompts"][0]["prompt"]
            assert prompt == ("a\ufffdb" if is_postgres(db_url) else "a\x00b")

            # a record no database holds is refused before anything is written
            with pytest.raises(InvalidRecord):
                await store.write([started("w"), tokens("w", "m", T0, 2**70, 1)])
            assert await store.get_interception("w") is None

            if is_postgres(db_url):  # a batch the database refuses halfway is not stored at all
                nan = ToolUsage(
                    interception_id="v",
                    msg_id="m",
                    tool_call_id="c",
                    tool="t",
                    args={"x": math.nan},
                    injected=True,
                )
                with pytest.raises(DBAPIError):
                    await store.write([started("v"), nan])
                assert await store.get_interception("v") is None

    run(body())


def listing_fixture() -> list[Any]:
    """23 interceptions, two by two at the same time (the id breaks ties), with three actors, two models
    and two providers."""
    records: list[Any] = []
    for index in range(23):
        iid = f"i{index:02d}"
        records.append(
            started(
                iid,
                at=T0 + timedelta(minutes=index // 2),
                actor=("alice", "bob", None)[index % 3],
                model=("gpt-4o", "gpt-4o-mini")[index % 2],
                provider="azure" if index % 5 == 0 else "openai",
            )
        )
        records.append(tokens(iid, "m", T0 + timedelta(minutes=index // 2, seconds=1), index, 1))
    return records


def newest_first(
    records: list[Any], keep: Callable[[InterceptionStarted], bool] = lambda _: True
) -> list[str]:
    starts = [record for record in records if isinstance(record, InterceptionStarted) and keep(record)]
    starts.sort(key=lambda record: (record.started_at, record.interception_id), reverse=True)
    return [record.interception_id for record in starts]


async def all_pages(store: RecordStore, limit: int, **filters: Any) -> tuple[list[str], int]:
    ids: list[str] = []
    cursor, pages = None, 0
    while True:
        items, cursor = await store.list_interceptions(cursor=cursor, limit=limit, **filters)
        pages += 1
        assert len(items) <= limit
        ids += [item["id"] for item in items]
        if cursor is None:
            return ids, pages


def test_listing_filters_and_pages(db_url: str) -> None:
    records = listing_fixture()

    async def body() -> None:
        async with opened(db_url) as store:
            await store.write(records)
            everything = newest_first(records)
            assert len(everything) == 23
            assert await all_pages(store, 5) == (everything, 5)
            assert await all_pages(store, 23) == (everything, 1)
            assert await all_pages(store, 1) == (everything, 23)

            cases: list[tuple[dict[str, Any], Callable[[InterceptionStarted], bool]]] = [
                ({"actor": "alice"}, lambda r: r.actor_id == "alice"),
                ({"model": "gpt-4o-mini"}, lambda r: r.model == "gpt-4o-mini"),
                ({"provider": "azure"}, lambda r: r.provider == "azure"),
                ({"since": T0 + timedelta(minutes=3)}, lambda r: r.started_at >= T0 + timedelta(minutes=3)),
                ({"until": T0 + timedelta(minutes=5)}, lambda r: r.started_at < T0 + timedelta(minutes=5)),
                (
                    {
                        "actor": "bob",
                        "model": "gpt-4o",
                        "since": T0 + s(60),
                        "until": T0 + timedelta(minutes=10),
                    },
                    lambda r: (
                        r.actor_id == "bob"
                        and r.model == "gpt-4o"
                        and T0 + s(60) <= r.started_at < T0 + timedelta(minutes=10)
                    ),
                ),
                ({"actor": "nobody"}, lambda r: False),
            ]
            for filters, keep in cases:
                expected = newest_first(records, keep)
                ids, _ = await all_pages(store, 2, **filters)
                assert ids == expected, filters

            items, _ = await store.list_interceptions(limit=1)
            assert (items[0]["id"], items[0]["input_tokens"], items[0]["output_tokens"]) == ("i22", 22, 1)

            # a page boundary between two interceptions of the same time, and one started meanwhile
            first, cursor = await store.list_interceptions(limit=3)
            assert [item["id"] for item in first] == everything[:3]
            await store.write([started("i99", at=T0 + timedelta(hours=1))])
            rest, _ = await all_pages_from(store, cursor, 4)
            assert [item["id"] for item in first] + rest == everything

            with pytest.raises(InvalidCursor):
                await store.list_interceptions(cursor="not-a-cursor")

    run(body())


async def all_pages_from(store: RecordStore, cursor: str | None, limit: int) -> tuple[list[str], int]:
    ids: list[str] = []
    pages = 0
    while cursor is not None:
        items, cursor = await store.list_interceptions(cursor=cursor, limit=limit)
        ids += [item["id"] for item in items]
        pages += 1
    return ids, pages


def usage_fixture() -> list[Any]:
    return [
        started("a1", at=datetime(2025, 3, 1, 23, 30, tzinfo=UTC)),
        tokens("a1", "m1", T0, 100, 10, 5),
        tokens("a1", "m2", T0, 50, 5, 0),
        # 00:30 at +02:00 is 22:30 UTC the day before
        started("a2", at=datetime(2025, 3, 2, 0, 30, tzinfo=timezone(timedelta(hours=2)))),
        tokens("a2", "m1", T0, 1, 2, 3),
        started("a3", at=datetime(2025, 3, 2, 0, 10, tzinfo=UTC), model="gpt-4o-mini"),
        tokens("a3", "m1", T0, 7, 8, 9),
        started("b1", at=datetime(2025, 3, 2, 12, tzinfo=UTC), actor="bob"),
        tokens("b1", "m1", T0, 1000, 100, 0),
        started("n1", at=datetime(2025, 3, 3, 1, tzinfo=UTC), actor=None),  # no token usage
    ]


def usage_row(
    interceptions: int, inp: int, out: int, cached: int, written: int = 0, **keys: Any
) -> dict[str, Any]:
    return {
        **keys,
        "interceptions": interceptions,
        "input_tokens": inp,
        "output_tokens": out,
        "cache_read_tokens": cached,
        "cache_write_tokens": written,
    }


def test_usage_groups_by_actor_model_and_utc_day(db_url: str) -> None:
    async def body() -> None:
        async with opened(db_url) as store:
            assert await store.usage() == []
            await store.write(usage_fixture())
            assert await store.usage() == [
                usage_row(2, 151, 17, 8, actor_id="alice", model="gpt-4o", day="2025-03-01"),
                usage_row(1, 7, 8, 9, actor_id="alice", model="gpt-4o-mini", day="2025-03-02"),
                usage_row(1, 1000, 100, 0, actor_id="bob", model="gpt-4o", day="2025-03-02"),
                usage_row(1, 0, 0, 0, actor_id=None, model="gpt-4o", day="2025-03-03"),
            ]
            assert await store.usage(by=("actor",)) == [
                usage_row(1, 0, 0, 0, actor_id=None),
                usage_row(3, 158, 25, 17, actor_id="alice"),
                usage_row(1, 1000, 100, 0, actor_id="bob"),
            ]
            assert await store.usage(by=["model"]) == [
                usage_row(4, 1151, 117, 8, model="gpt-4o"),
                usage_row(1, 7, 8, 9, model="gpt-4o-mini"),
            ]
            assert await store.usage(by=("day",)) == [
                usage_row(2, 151, 17, 8, day="2025-03-01"),
                usage_row(2, 1007, 108, 9, day="2025-03-02"),
                usage_row(1, 0, 0, 0, day="2025-03-03"),
            ]
            assert await store.usage(by=("day", "actor")) == [
                usage_row(2, 151, 17, 8, actor_id="alice", day="2025-03-01"),
                usage_row(1, 7, 8, 9, actor_id="alice", day="2025-03-02"),
                usage_row(1, 1000, 100, 0, actor_id="bob", day="2025-03-02"),
                usage_row(1, 0, 0, 0, actor_id=None, day="2025-03-03"),
            ]
            assert await store.usage(by=()) == [usage_row(5, 1158, 125, 17)]
            march_2 = datetime(2025, 3, 2, tzinfo=UTC)
            assert await store.usage(since=march_2, until=march_2 + timedelta(days=1), by=("model",)) == [
                usage_row(1, 1000, 100, 0, model="gpt-4o"),
                usage_row(1, 7, 8, 9, model="gpt-4o-mini"),
            ]
            with pytest.raises(ValueError, match="cannot group by week"):
                await store.usage(by=("week",))

    run(body())


def families_fixture() -> list[Any]:
    claude = {"family": Family.ANTHROPIC_MESSAGES, "provider": "anthropic", "model": "claude-sonnet-4-5"}
    return [
        started("c1", **claude),
        tokens("c1", "msg_1", T0, 10, 5, 100, 40),
        ModelThought(interception_id="c1", msg_id="msg_1", content="think first", created_at=T0),
        started("c2", actor="bob", **claude),
        tokens("c2", "msg_1", T0, 1, 2, 3, 4),
        started("o1"),
        tokens("o1", "m1", T0, 1000, 100, 7),
    ]


def test_records_carry_family_provider_cache_writes_and_thoughts(db_url: str) -> None:
    async def body() -> None:
        async with opened(db_url) as store:
            await store.write(families_fixture())
            claude = await store.get_interception("c1")
            assert (claude["family"], claude["provider"]) == ("anthropic_messages", "anthropic")
            assert (claude["cache_read_tokens"], claude["cache_write_tokens"]) == (100, 40)
            assert claude["thoughts"] == [{"msg_id": "msg_1", "content": "think first", "created_at": T0}]
            assert (await store.get_interception("o1"))["family"] == "openai_chat"

            by_provider = await store.usage(by=("provider",))
            assert by_provider == [
                usage_row(2, 11, 7, 103, 44, provider="anthropic"),
                usage_row(1, 1000, 100, 7, provider="openai"),
            ]
            assert await store.usage(by=("family", "actor")) == [
                usage_row(1, 10, 5, 100, 40, actor_id="alice", family="anthropic_messages"),
                usage_row(1, 1000, 100, 7, actor_id="alice", family="openai_chat"),
                usage_row(1, 1, 2, 3, 4, actor_id="bob", family="anthropic_messages"),
            ]
            assert await store.usage(by=("model",), provider="anthropic") == [
                usage_row(2, 11, 7, 103, 44, model="claude-sonnet-4-5")
            ]
            assert await store.usage(by=(), family="openai_chat") == [usage_row(1, 1000, 100, 7)]
            listed, _ = await store.list_interceptions(family="anthropic_messages")
            assert sorted(item["id"] for item in listed) == ["c1", "c2"]
            listed, _ = await store.list_interceptions(provider="openai")
            assert [(item["id"], item["cache_write_tokens"]) for item in listed] == [("o1", 0)]

    run(body())


def test_usage_and_listing_by_client_with_session_ids(db_url: str) -> None:
    claude = {"client": Client.CLAUDE_CODE, "family": Family.ANTHROPIC_MESSAGES, "provider": "anthropic"}
    records = [
        started("cc1", session_id="sess-a", **claude),
        tokens("cc1", "m1", T0, 10, 5),
        started("cc2", actor="bob", session_id="sess-b", **claude),
        tokens("cc2", "m1", T0, 20, 6),
        started("cx1", client=Client.CODEX, session_id="thread-1"),
        tokens("cx1", "m1", T0, 300, 7),
        started("u1"),
        tokens("u1", "m1", T0, 4000, 8),
    ]

    async def body() -> None:
        async with opened(db_url) as store:
            await store.write(records)
            assert await store.usage(by=("client",)) == [
                usage_row(2, 30, 11, 0, client="claude-code"),
                usage_row(1, 300, 7, 0, client="codex"),
                usage_row(1, 4000, 8, 0, client="unknown"),
            ]
            assert await store.usage(by=("actor", "client"), client="claude-code") == [
                usage_row(1, 10, 5, 0, actor_id="alice", client="claude-code"),
                usage_row(1, 20, 6, 0, actor_id="bob", client="claude-code"),
            ]
            listed, _ = await store.list_interceptions(client="codex")
            assert [(item["id"], item["client"], item["session_id"]) for item in listed] == [
                ("cx1", "codex", "thread-1")
            ]
            assert (await store.get_interception("cc2"))["session_id"] == "sess-b"

    run(body())


def test_migration_0004_marks_earlier_interceptions_of_unknown_client(empty_url: str) -> None:
    async def body() -> None:
        await upgrade(empty_url, "0003")
        engine = create_engine(empty_url)
        try:
            async with engine.begin() as connection:
                for statement in (
                    "INSERT INTO interceptions (id, actor_metadata, provider, model, streaming, started_at, "
                    "family) VALUES ('old', '{}', 'openai', 'gpt-4o', true, '2025-03-01 12:00:00', "
                    "'openai_chat')",
                    "INSERT INTO interceptions (id, actor_metadata, started_at) "
                    "VALUES ('placeholder', '{}', '2025-03-01 12:00:00')",
                ):
                    await connection.execute(sa.text(statement))
        finally:
            await engine.dispose()
        await upgrade(empty_url)
        async with opened(empty_url) as store:
            old = await store.get_interception("old")
            assert (old["client"], old["session_id"]) == ("unknown", None)
            assert (await store.get_interception("placeholder"))["client"] is None  # its start completes it
            assert await store.usage(by=("client",)) == [
                usage_row(1, 0, 0, 0, client=None),
                usage_row(1, 0, 0, 0, client="unknown"),
            ]

    run(body())


def test_migration_0003_keeps_the_records_of_0002_as_chat_completions(empty_url: str) -> None:
    async def body() -> None:
        await upgrade(empty_url, "0002")
        engine = create_engine(empty_url)
        try:
            async with engine.begin() as connection:
                for statement in (
                    "INSERT INTO interceptions (id, actor_metadata, provider, model, streaming, started_at) "
                    "VALUES ('old', '{}', 'openai', 'gpt-4o', true, '2025-03-01 12:00:00')",
                    "INSERT INTO interceptions (id, actor_metadata, started_at) "
                    "VALUES ('placeholder', '{}', '2025-03-01 12:00:00')",
                    "INSERT INTO token_usages (id, interception_id, msg_id, input_tokens, output_tokens, "
                    "cache_read_tokens, extra, created_at) "
                    "VALUES ('t', 'old', 'm', 5, 6, 7, '{}', '2025-03-01 12:00:01')",
                ):
                    await connection.execute(sa.text(statement))
        finally:
            await engine.dispose()
        await upgrade(empty_url)
        assert await current_revision(empty_url) == HEAD
        async with opened(empty_url) as store:
            old = await store.get_interception("old")
            assert (old["family"], old["cache_write_tokens"], old["thoughts"]) == ("openai_chat", 0, [])
            assert old["token_usages"][0]["cache_write_tokens"] == 0
            assert (await store.get_interception("placeholder"))["family"] is None  # its start completes it

    run(body())


# -- the outbox: records in a Redis Stream, drained into the database --


@dataclass
class Outbox:
    """A worker's recording on a real Redis, under a key prefix of the test's own."""

    recorder: OutboxRecorder
    drainer: RecordDrainer  # the worker's (started)
    another: Callable[..., RecordDrainer]  # another worker's drainer (started): consumer name, options
    redis: Redis
    keys: RedisKeys

    async def waiting(self) -> int:
        """How many records the outbox holds."""
        return await self.redis.xlen(self.keys.records)


@asynccontextmanager
async def outbox(
    redis_url: str, store: RecordStore, maxlen: int = 10_000, **options: Any
) -> AsyncIterator[Outbox]:
    redis = Redis.from_url(redis_url)
    keys = RedisKeys(f"test-outbox-{uuid.uuid4().hex[:8]}:")
    writes = CoalescingWriter(redis)
    writes.start()
    drainers: list[RecordDrainer] = []

    def drainer(consumer: str = "w1", **more: Any) -> RecordDrainer:
        made = RecordDrainer(
            redis, store, keys, consumer, maxlen=maxlen, heartbeat_timeout=60, **{**options, **more}
        )
        made.start()
        drainers.append(made)
        return made

    try:
        yield Outbox(OutboxRecorder(writes, keys, "w1", maxlen), drainer(), drainer, redis, keys)
    finally:
        for made in drainers:
            await made.close(timeout=1)
        await writes.stop()
        await redis.delete(keys.records, keys.open_interceptions, keys.workers)
        await redis.aclose()


def test_the_outbox_drains_into_the_database_and_keeps_what_a_stopped_worker_left(
    db_url: str, redis_url: str
) -> None:
    async def body() -> None:
        async with opened(db_url) as store, outbox(redis_url, store) as box:
            for record in one_interception("b-1"):
                box.recorder.record(record)
            await wait_until(lambda: box.drainer.writer.written == ONE_INTERCEPTION)
            assert await store.get_interception("b-1") == expected_interception("b-1")
            await wait_until_true(box.waiting, 0)  # acknowledged and deleted once committed
            assert await box.redis.hlen(box.keys.open_interceptions) == 0  # started, then ended

            await box.drainer.close(
                timeout=5
            )  # the worker stops; a record still comes (an interception's end)
            box.recorder.record(started("left-over"))
            await box.recorder.flushed(timeout=5)
            assert await box.waiting() == 1  # not lost: it waits in Redis
            later = box.another("w2")  # the next worker writes it
            await wait_until(lambda: later.writer.written == 1)
            assert (await store.get_interception("left-over"))["model"] == "gpt-4o"
            assert (box.recorder.dropped, box.drainer.writer.failures, box.drainer.writer.rejected) == (
                0,
                0,
                0,
            )

    run(body())


def test_a_dead_consumers_records_are_claimed_and_stored_once(db_url: str, redis_url: str) -> None:
    async def body() -> None:
        async with opened(db_url) as store, outbox(redis_url, store, claim_idle=0.5) as box:
            await wait_until_true(lambda: box.redis.exists(box.keys.records), 1)  # the group is made
            await box.drainer.close(timeout=5)  # no consumer reads, until the dead one takes the entries
            records = one_interception("c-1")
            for record in records:
                box.recorder.record(record)
            await box.recorder.flushed(timeout=5)
            taken = await box.redis.xreadgroup(GROUP, "dead", {box.keys.records: ">"}, count=100)
            assert len(taken[0][1]) == ONE_INTERCEPTION
            await store.write(records[:4])  # it committed some of them, then died before acknowledging
            survivor = box.another("w2")
            await wait_until(lambda: survivor.writer.written == ONE_INTERCEPTION)
            assert await store.get_interception("c-1") == expected_interception("c-1")  # no duplicate
            await wait_until_true(box.waiting, 0)
            assert (await box.redis.xpending(box.keys.records, GROUP))["pending"] == 0
            deadline = time.monotonic() + 5  # the silent consumer is forgotten once it holds nothing
            while b"dead" in {c["name"] for c in await box.redis.xinfo_consumers(box.keys.records, GROUP)}:
                assert time.monotonic() < deadline, "the dead consumer is still in the group"
                await asyncio.sleep(0.05)

    run(body())


def test_interceptions_of_dead_workers_end_once_as_worker_lost(db_url: str, redis_url: str) -> None:
    async def body() -> None:
        async with opened(db_url) as store, outbox(redis_url, store) as box:
            box.recorder.record(started("alive"))
            box.recorder.record(started("orphan"))
            await box.recorder.flushed(timeout=5)
            assert await box.redis.hgetall(box.keys.open_interceptions) == {b"alive": b"w1", b"orphan": b"w1"}
            await box.redis.hset(
                box.keys.open_interceptions, "orphan", "gone"
            )  # a worker whose heartbeat stopped
            await box.redis.zadd(box.keys.workers, {"w1": time.time(), "gone": time.time() - 120})
            sweeps = [end_lost_interceptions(box.redis, box.keys, 15, 1000) for _ in range(3)]
            assert sorted(await asyncio.gather(*sweeps)) == [0, 0, 1]  # workers sweeping at once: one ends it
            await wait_until(lambda: box.drainer.writer.written == 3)
            assert (await store.get_interception("orphan"))["outcome"] == "worker_lost"
            assert (await store.get_interception("alive"))["outcome"] is None
            assert await box.redis.hkeys(box.keys.open_interceptions) == [b"alive"]

    run(body())


class Proxy:
    """A TCP relay to the database that can be stopped (connections cut) and started again."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await self._server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, upstream_writer}

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.transport.abort()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))
        self._writers -= {writer, upstream_writer}


@asynccontextmanager
async def outage(
    url: str, tmp_path: Path
) -> AsyncIterator[tuple[str, Callable[[], Awaitable[None]], Proxy | None]]:
    """A URL to the database at ``url`` that is unreachable until the function given is awaited: for
    SQLite, its folder is moved away and back; for PostgreSQL, a relay in front of it is down then up."""
    if not is_postgres(url):
        path = Path(sa.make_url(url).database)
        away = tmp_path / "moved-away"
        path.parent.rename(away)

        async def back() -> None:
            away.rename(path.parent)

        yield url, back, None
        return
    parsed = sa.make_url(url)
    proxy = Proxy((parsed.host or "127.0.0.1", parsed.port or 5432))
    via = parsed.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    try:
        yield via, proxy.start, proxy
    finally:
        with contextlib.suppress(Exception):
            await proxy.stop()


def warnings_about(caplog: pytest.LogCaptureFixture, text: str) -> int:
    return sum(1 for r in caplog.records if r.name in RECORDING_LOGGERS and text in r.getMessage())


def test_the_outbox_keeps_records_through_an_outage(
    empty_url: str, redis_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    if not is_postgres(empty_url):  # a database in a folder of its own, to move away
        empty_url = f"sqlite+aiosqlite:///{tmp_path / 'db' / 'records.db'}"
        (tmp_path / "db").mkdir()
    run(upgrade(empty_url))

    async def body() -> None:
        async with (
            outage(empty_url, tmp_path) as (url, back, proxy),
            opened(url) as store,
            outbox(redis_url, store, retry_initial=0.02, retry_max=0.1) as box,
        ):
            writer = box.drainer.writer
            for record in one_interception("o-1"):
                box.recorder.record(record)
            await wait_until(lambda: writer.failures >= 4)
            assert (writer.written, await box.waiting(), box.recorder.dropped) == (0, ONE_INTERCEPTION, 0)
            await back()
            await wait_until(lambda: writer.written == ONE_INTERCEPTION)
            assert await store.get_interception("o-1") == expected_interception("o-1")
            assert warnings_about(caplog, "database is unavailable") == 1
            assert warnings_about(caplog, "database is back") == 1

            if proxy is not None:  # the database goes away under a pooled connection, then comes back
                await proxy.stop()
                failures = writer.failures
                for record in one_interception("o-2"):
                    box.recorder.record(record)
                await wait_until(lambda: writer.failures >= failures + 2)
                assert writer.written == ONE_INTERCEPTION
                await proxy.start()
                await wait_until(lambda: writer.written == 2 * ONE_INTERCEPTION)
                assert await store.get_interception("o-2") == expected_interception("o-2")
                assert warnings_about(caplog, "database is unavailable") == 2
                assert warnings_about(caplog, "database is back") == 2
            await wait_until_true(box.waiting, 0)
            assert (box.recorder.dropped, writer.rejected) == (0, 0)
        assert not [r for r in caplog.records if r.name in RECORDING_LOGGERS and r.exc_info]

    run(body())


def test_the_outbox_waits_out_another_writers_lock(tmp_path: Path, redis_url: str) -> None:
    """SQLite shared by several processes: a write lock held elsewhere delays records, it loses none."""
    path = tmp_path / "records.db"
    url = f"sqlite+aiosqlite:///{path}"
    run(upgrade(url))

    async def body() -> None:
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another writer, holding on
        try:
            async with (
                opened(url, sqlite_busy_timeout=0.05) as store,
                outbox(redis_url, store, retry_initial=0.02, retry_max=0.05) as box,
            ):
                writer = box.drainer.writer
                for record in one_interception("l-1"):
                    box.recorder.record(record)
                await wait_until(lambda: writer.failures >= 3)
                assert (writer.written, writer.rejected, await box.waiting()) == (0, 0, ONE_INTERCEPTION)
                holder.execute("COMMIT")
                await wait_until(lambda: writer.written == ONE_INTERCEPTION)
                assert await store.get_interception("l-1") == expected_interception("l-1")
                assert (writer.rejected, box.recorder.dropped) == (0, 0)
        finally:
            holder.close()

    run(body())


def test_the_outbox_drops_the_oldest_past_its_cap(db_url: str, redis_url: str) -> None:
    async def body() -> None:
        async with opened(db_url) as store, outbox(redis_url, store, maxlen=5) as box:
            await box.drainer.close(timeout=5)  # no worker drains for a while
            for index in range(8):
                box.recorder.record(started(f"s{index}", at=T0 + s(index)))
            await box.recorder.flushed(timeout=5)
            assert await box.waiting() == 5
            drainer = box.another("w2")
            await wait_until(lambda: drainer.writer.written == 5)
            items, _ = await store.list_interceptions()
            assert [item["id"] for item in items] == ["s7", "s6", "s5", "s4", "s3"]

    run(body())


def test_stopping_is_bounded_while_the_database_is_down_and_loses_nothing(
    empty_url: str, redis_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    if is_postgres(empty_url):
        url = sa.make_url(empty_url).set(host="127.0.0.1", port=free_port()).render_as_string(False)
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / 'missing' / 'records.db'}"

    async def body() -> None:
        async with opened(url) as store, outbox(redis_url, store, maxlen=3, retry_initial=0.05) as box:
            for index in range(3):
                box.recorder.record(started(f"d{index}"))
            await wait_until(lambda: box.drainer.writer.failures >= 2)
            began = time.monotonic()
            await box.drainer.close(timeout=0.3)
            assert time.monotonic() - began < 1.5
            assert (box.drainer.writer.written, box.recorder.dropped, await box.waiting()) == (0, 0, 3)
            pending = await box.redis.xpending(box.keys.records, GROUP)
            assert pending["pending"] == 3  # held by the stopped worker: another claims them
            assert warnings_about(caplog, "3 records wait in the outbox (cap 3)") == 1

    run(body())


def test_the_outbox_skips_a_record_the_database_refuses(
    db_url: str, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)

    async def body() -> None:
        async with opened(db_url) as store, outbox(redis_url, store) as box:
            box.recorder.record(started("r"))
            box.recorder.record(tokens("r", "m1", T0, 2**70, 1))
            box.recorder.record(tokens("r", "m2", T0 + s(1), 4, 2))
            writer = box.drainer.writer
            await wait_until(lambda: writer.written == 2)
            assert (writer.rejected, writer.failures, box.recorder.dropped) == (1, 0, 0)
            got = await store.get_interception("r")
            assert [usage["input_tokens"] for usage in got["token_usages"]] == [4]
            await wait_until_true(
                box.waiting, 0
            )  # the refused one is acknowledged too: it does not come back
        assert warnings_about(caplog, "refused a token_usage record of interception r") == 1

    run(body())


# -- the read API --


@pytest.fixture
def api(db_url: str) -> Iterator[TestClient]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.aibridge_records = RecordStore(db_url)
        app.state.aibridge_client_keys = None  # no client keys: every record is visible
        yield
        await app.state.aibridge_records.close()

    app = FastAPI(lifespan=lifespan)
    app.include_router(usage_router)
    with TestClient(app) as client:
        yield client


def assert_invalid(response: Any, param: str) -> None:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", "invalid_query", param)
    assert error["message"]


def test_usage_routes(db_url: str, api: TestClient) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    run(
        write_all(
            db_url,
            [
                *usage_fixture(),
                *one_interception("i-1"),
                started("recent", at=now - timedelta(hours=1), actor="carol"),
            ],
        )
    )

    detail = api.get("/api/v1/interceptions/i-1")
    assert detail.status_code == 200
    body = detail.json()
    assert (body["started_at"], body["ended_at"]) == ("2025-03-01T12:00:00Z", "2025-03-01T12:00:06Z")
    assert body["tool_usages"][0]["args"] == {"a": 1, "b": [2, 3]}
    assert body["prompts"] == [
        {"msg_id": "msg-1", "prompt": "what is 2+2?", "created_at": "2025-03-01T12:00:01Z"}
    ]
    missing = api.get("/api/v1/interceptions/nope")
    assert missing.status_code == 404
    assert missing.json() == {
        "error": {"message": "no interception 'nope'", "type": "invalid_request_error", "code": "not_found"}
    }

    ids, cursor = [], None
    while True:
        page = api.get("/api/v1/interceptions", params={"limit": 2, **({"cursor": cursor} if cursor else {})})
        assert page.status_code == 200
        ids += [item["id"] for item in page.json()["data"]]
        if (cursor := page.json()["next_cursor"]) is None:
            break
    assert ids == ["recent", "n1", "b1", "a3", "a1", "a2", "i-1"]
    filtered = api.get(
        "/api/v1/interceptions", params={"actor": "alice", "since": "2025-03-01T18:00:00+01:00"}
    )
    assert [item["id"] for item in filtered.json()["data"]] == ["a3", "a1", "a2"]
    assert [i["id"] for i in api.get("/api/v1/interceptions", params={"since": "24h"}).json()["data"]] == [
        "recent"
    ]
    until = api.get(
        "/api/v1/interceptions", params={"until": "2025-03-02", "model": "gpt-4o", "provider": "openai"}
    )
    assert [item["id"] for item in until.json()["data"]] == ["a1", "a2", "i-1"]

    for params, param in [
        ({"since": "yesterday"}, "since"),
        ({"until": "7x"}, "until"),
        ({"since": "2025-03-02", "until": "2025-03-01"}, "since"),
        ({"limit": "0"}, "limit"),
        ({"limit": "201"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"cursor": "bogus"}, "cursor"),
    ]:
        assert_invalid(api.get("/api/v1/interceptions", params=params), param)
    assert api.get("/api/v1/interceptions", params={"limit": "200"}).status_code == 200

    usage = api.get("/api/v1/usage", params={"until": "2025-04-01"}).json()
    assert usage["data"][0] == {
        "actor_id": "alice",
        "model": "gpt-4o",
        "day": "2025-03-01",
        "interceptions": 3,
        "input_tokens": 301,
        "output_tokens": 44,
        "cache_read_tokens": 38,
        "cache_write_tokens": 12,
    }
    by_model = api.get("/api/v1/usage", params={"by": "model", "since": "2025-03-02", "until": "2025-03-03"})
    assert by_model.json() == {
        "data": [usage_row(1, 1000, 100, 0, model="gpt-4o"), usage_row(1, 7, 8, 9, model="gpt-4o-mini")]
    }
    assert [row["day"] for row in api.get("/api/v1/usage", params={"by": "day, actor"}).json()["data"]][
        -1
    ] == (now - timedelta(hours=1)).strftime("%Y-%m-%d")
    assert_invalid(api.get("/api/v1/usage", params={"by": "actor,week"}), "by")
    assert_invalid(api.get("/api/v1/usage", params={"since": "last week"}), "since")


def test_usage_routes_answer_503_while_the_database_is_down(tmp_path: Path) -> None:
    app = FastAPI()
    app.include_router(usage_router)
    app.state.aibridge_records = RecordStore(f"sqlite+aiosqlite:///{tmp_path / 'missing' / 'records.db'}")
    app.state.aibridge_client_keys = None
    with TestClient(app) as client:
        for path in ("/api/v1/interceptions", "/api/v1/interceptions/x", "/api/v1/usage"):
            response = client.get(path)
            assert response.status_code == 503, path
            assert response.json()["error"]["code"] == "records_unavailable"
            assert response.headers["retry-after"] == "5"


async def write_all(url: str, records: list[Any]) -> None:
    async with opened(url) as store:
        await store.write(records)


# -- the report --


def test_format_usage_table() -> None:
    rows = [
        usage_row(1, 0, 0, 0, actor_id=None, model="gpt-4o"),
        usage_row(3, 158, 25, 17, 4, actor_id="alice", model="gpt-4o-mini"),
        usage_row(12, 1_234_567, 100, 0, actor_id="bob", model="gpt-4o"),
    ]
    assert format_usage_table(rows, ("actor", "model")) == "\n".join(
        [
            "ACTOR   MODEL        INTERCEPTIONS      INPUT  OUTPUT  CACHE READ  CACHE WRITE",
            "(none)  gpt-4o                   1          0       0           0            0",
            "alice   gpt-4o-mini              3        158      25          17            4",
            "bob     gpt-4o                  12  1,234,567     100           0            0",
            "------  -----------  -------------  ---------  ------  ----------  -----------",
            "TOTAL                           16  1,234,725     125          17            4",
        ]
    )
    assert format_usage_table([usage_row(2, 5, 6, 7, model="m")], ["model"]) == "\n".join(
        [
            "MODEL  INTERCEPTIONS  INPUT  OUTPUT  CACHE READ  CACHE WRITE",
            "m                  2      5       6           7            0",
            "-----  -------------  -----  ------  ----------  -----------",
            "TOTAL              2      5       6           7            0",
        ]
    )
    assert format_usage_table([usage_row(2, 5, 6, 7)], ()) == "\n".join(
        [
            "       INTERCEPTIONS  INPUT  OUTPUT  CACHE READ  CACHE WRITE",
            "TOTAL              2      5       6           7            0",
        ]
    )
    assert format_usage_table([], ("actor",)) == "no usage recorded"


def test_usage_report(db_url: str, tmp_path: Path) -> None:
    run(write_all(db_url, usage_fixture()))
    report = run(usage_report(db_url, None, "model"))
    assert report == "\n".join(
        [
            "Token usage, all time, by model",
            "",
            "MODEL        INTERCEPTIONS  INPUT  OUTPUT  CACHE READ  CACHE WRITE",
            "gpt-4o                   4  1,151     117           8            0",
            "gpt-4o-mini              1      7       8           9            0",
            "-----------  -------------  -----  ------  ----------  -----------",
            "TOTAL                    5  1,158     125          17            0",
        ]
    )
    default = run(usage_report(db_url, "2025-03-02", None)).splitlines()
    assert default[0] == "Token usage, since 2025-03-02 00:00 UTC, by actor and model"
    assert default[2].split() == [
        *("ACTOR", "MODEL", "INTERCEPTIONS", "INPUT", "OUTPUT"),
        *("CACHE", "READ", "CACHE", "WRITE"),
    ]
    assert [line.split()[:2] for line in default[3:-2]] == [
        ["(none)", "gpt-4o"],
        ["alice", "gpt-4o-mini"],
        ["bob", "gpt-4o"],
    ]
    assert run(usage_report(db_url, None, "client", client="unknown")).splitlines()[::2] == [
        "Token usage from unknown, all time, by client",
        "CLIENT   INTERCEPTIONS  INPUT  OUTPUT  CACHE READ  CACHE WRITE",
        "-------  -------------  -----  ------  ----------  -----------",
    ]
    assert run(usage_report(db_url, None, "client", client="codex")).endswith("no usage recorded")
    assert run(usage_report(db_url, "1d", "actor")).endswith("no usage recorded")
    for since, by, message in [
        ("soon", None, "--since"),
        (None, "colour", "cannot group by colour"),
    ]:
        with pytest.raises(ReportError, match=message):
            run(usage_report(db_url, since, by))
    with pytest.raises(ReportError, match="no usage records at"):
        run(usage_report(f"sqlite:///{tmp_path / 'none.db'}", None, None))
    assert not (tmp_path / "none.db").exists()
    with pytest.raises(ReportError, match="unsupported database URL scheme"):
        run(usage_report("mysql://x/y", None, None))


# -- small parts --


def test_parse_time_and_urls() -> None:
    now = datetime(2025, 3, 10, 12, tzinfo=UTC)
    assert parse_time("7d", now) == datetime(2025, 3, 3, 12, tzinfo=UTC)
    assert parse_time("24h", now) == datetime(2025, 3, 9, 12, tzinfo=UTC)
    assert parse_time("90m", now) == datetime(2025, 3, 10, 10, 30, tzinfo=UTC)
    assert parse_time("2w", now) == datetime(2025, 2, 24, 12, tzinfo=UTC)
    assert parse_time("2025-01-31") == datetime(2025, 1, 31, tzinfo=UTC)
    assert parse_time("2025-01-31T14:00:00+02:00") == datetime(2025, 1, 31, 12, tzinfo=UTC)
    assert parse_time("2025-01-31T14:00:00Z").tzinfo == UTC
    for bad in ("", "7", "d7", "yesterday", "2025-13-01", "99999999999d"):
        with pytest.raises(ValueError):
            parse_time(bad, now)
    assert async_url("sqlite:///a.db") == "sqlite+aiosqlite:///a.db"
    assert async_url("postgres://u:p@h/db") == "postgresql+asyncpg://u:p@h/db"
    assert async_url("postgresql://h/db") == "postgresql+asyncpg://h/db"
    assert async_url("postgresql+asyncpg://h/db") == "postgresql+asyncpg://h/db"
    for bad in ("mysql://h/db", "postgresql+psycopg2://h/db", "aibridge.db"):
        with pytest.raises(ValueError):
            async_url(bad)
