"""Points in time as the API and the CLI take them: ISO-8601, or relative to now (``7d``, ``24h``)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_RELATIVE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_time(value: str, now: datetime | None = None) -> datetime:
    """A timezone-aware UTC datetime from ``value``.

    ``value`` is either relative, meaning that long before ``now`` (``90s``, ``30m``, ``24h``, ``7d``,
    ``2w``), or ISO-8601 (``2025-01-31``, ``2025-01-31T12:00:00Z``, ``2025-01-31T14:00:00+02:00``); an
    ISO time without an offset is UTC. Raises ValueError with a message meant for the caller.
    """
    if match := _RELATIVE.match(value):
        amount, unit = int(match.group(1)), match.group(2)
        try:
            delta = timedelta(**{_UNITS[unit]: amount})
            return (now or datetime.now(UTC)).astimezone(UTC) - delta
        except OverflowError:
            raise ValueError(f"{value!r} reaches too far back") from None
    text = value.strip()
    try:
        parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in ("Z", "z") else text)
    except ValueError:
        raise ValueError(
            f"{value!r} is not a time: use ISO-8601 (2025-01-31 or 2025-01-31T12:00:00Z) "
            "or a duration before now (30m, 24h, 7d, 2w)"
        ) from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)
