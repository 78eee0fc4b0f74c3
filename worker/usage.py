"""Token usage summed over the upstream rounds of one interception."""

from __future__ import annotations

from typing import Any


def add_usage(total: dict[str, Any], usage: dict[str, Any]) -> dict[str, Any]:
    """Field-by-field sum of two usage objects; nested detail objects are summed too, key order kept."""
    summed = dict(total)
    for key, value in usage.items():
        current = summed.get(key)
        if isinstance(value, dict):
            summed[key] = add_usage(current if isinstance(current, dict) else {}, value)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            summed[key] = (current if isinstance(current, int | float) else 0) + value
        elif key not in summed:
            summed[key] = value
    return summed
