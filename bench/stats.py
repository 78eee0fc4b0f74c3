"""Percentiles and the formatting of times, shared by the benches."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def histogram_percentile(counts: dict[int, int], width: float, p: float) -> float:
    """Nearest-rank percentile of values counted in buckets ``width`` wide (bucket ``i``: values in
    ``[i * width, (i + 1) * width)``), as the bucket's middle; NaN for no values."""
    total = sum(counts.values())
    if not total:
        return math.nan
    rank = max(1, math.ceil(p / 100 * total))
    seen = 0
    for bucket in sorted(counts):
        seen += counts[bucket]
        if seen >= rank:
            return (bucket + 0.5) * width
    raise AssertionError("unreachable: the ranks add up to the total")


def ms(seconds: float, signed: bool = False) -> str:
    if math.isnan(seconds):
        return "n/a"
    return f"{seconds * 1000:+.1f}" if signed else f"{seconds * 1000:.1f}"


def number(value: float, digits: int = 0) -> str:
    return "n/a" if math.isnan(value) else f"{value:,.{digits}f}"


def ratio(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f}x"


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "**not met**")
