"""``aibridge usage``: token totals as a plain-text table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from shared.recording.engine import async_url
from shared.recording.reads import usage_dimensions
from shared.recording.store import RecordStore
from shared.recording.times import parse_time

DEFAULT_REPORT_BY = ("actor", "model")
_KEY_COLUMNS = {
    "actor": ("ACTOR", "actor_id"),
    "client": ("CLIENT", "client"),
    "provider": ("PROVIDER", "provider"),
    "family": ("FAMILY", "family"),
    "model": ("MODEL", "model"),
    "day": ("DAY", "day"),
}
_NUMBER_COLUMNS = (
    ("INTERCEPTIONS", "interceptions"),
    ("INPUT", "input_tokens"),
    ("OUTPUT", "output_tokens"),
    ("CACHE READ", "cache_read_tokens"),
    ("CACHE WRITE", "cache_write_tokens"),
)


class ReportError(Exception):
    """Why no report could be made; its message is one line meant for the person who asked."""


def format_usage_table(rows: Sequence[Mapping[str, Any]], by: Sequence[str]) -> str:
    """``rows`` of ``RecordStore.usage(by=by)`` as an aligned table, text left and numbers right, with a
    TOTAL line; ``(none)`` stands for interceptions without an actor (or whose start was not recorded)."""
    dimensions = usage_dimensions(by)
    if not rows:
        return "no usage recorded"
    keys = max(len(dimensions), 1)  # grouped by nothing: a single TOTAL line under an empty heading
    headers = [_KEY_COLUMNS[dimension][0] for dimension in dimensions] or [""]
    headers += [name for name, _ in _NUMBER_COLUMNS]
    lines = [
        [_text(row.get(_KEY_COLUMNS[dimension][1])) for dimension in dimensions]
        + [f"{int(row[key]):,}" for _, key in _NUMBER_COLUMNS]
        for row in rows
        if dimensions
    ]
    totals = [sum(int(row[key]) for row in rows) for _, key in _NUMBER_COLUMNS]
    total_line = ["TOTAL"] + [""] * (keys - 1) + [f"{value:,}" for value in totals]
    widths = [
        max(len(line[index]) for line in [headers, *lines, total_line]) for index in range(len(headers))
    ]

    def render(cells: list[str]) -> str:
        parts = [
            cell.ljust(width) if index < keys else cell.rjust(width)
            for index, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * width for width in widths)
    table = [render(headers), *(render(line) for line in lines)]
    if lines:
        table.append(rule)
    return "\n".join([*table, render(total_line)])


def _text(value: Any) -> str:
    return "(none)" if value is None or value == "" else str(value)


async def usage_report(
    url: str, since: str | None, by: str | None, provider: str | None = None, client: str | None = None
) -> str:
    """The usage table of the records at ``url``: since ``since`` (ISO-8601 or a duration before now, like
    ``7d``; all time when None), of ``provider`` and ``client`` alone when given, grouped by ``by`` (a comma
    list of actor, client, provider, family, model, day; actor and model when None). Raises ReportError."""
    try:
        start = parse_time(since) if since is not None else None
    except ValueError as exc:
        raise ReportError(f"--since: {exc}") from None
    try:
        dimensions = DEFAULT_REPORT_BY if by is None else usage_dimensions(by)
        database = sa.make_url(async_url(url))
    except ValueError as exc:
        raise ReportError(str(exc)) from None
    shown = database.render_as_string(hide_password=True)
    if _missing_sqlite_file(database):
        raise ReportError(f"no usage records at {shown}: the gateway creates them when it first runs")
    store = RecordStore(url)
    try:
        rows = await store.usage(since=start, by=dimensions, provider=provider, client=client)
    except (SQLAlchemyError, OSError) as exc:
        cause = getattr(exc, "orig", None) or exc
        detail = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        raise ReportError(f"cannot read the usage records at {shown}: {detail}") from None
    finally:
        await store.close()
    return f"{_heading(start, dimensions, provider, client)}\n\n{format_usage_table(rows, dimensions)}"


def _missing_sqlite_file(database: sa.URL) -> bool:
    """A SQLite URL whose file does not exist (connecting would create an empty one)."""
    if database.get_backend_name() != "sqlite" or database.database in (None, "", ":memory:"):
        return False
    return not Path(database.database).is_file()


def _heading(
    since: datetime | None, dimensions: Sequence[str], provider: str | None, client: str | None
) -> str:
    period = f"since {since:%Y-%m-%d %H:%M} UTC" if since is not None else "all time"
    of = f" of {provider}" if provider is not None else ""
    source = f" from {client}" if client is not None else ""
    grouping = f", by {' and '.join(dimensions)}" if dimensions else ""
    return f"Token usage{of}{source}, {period}{grouping}"
