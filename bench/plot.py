"""``bench.run``'s plot: added TTFT p50 and chunks/s against concurrency, one line per run and API family."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from bench.report import family_of


def plot(document: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = document["results"]
    families = document.get("families", ["chat"])
    direct = {(family_of(r), r["concurrency"]): r for r in results if r["run"] == "direct"}
    figure, (latency, throughput) = plt.subplots(1, 2, figsize=(12, 4.8))
    lowest = 0.0
    for family, run in ((family, run) for family in families for run in document["runs"]):
        mine = sorted(
            (r for r in results if r["run"] == run and family_of(r) == family), key=lambda r: r["concurrency"]
        )
        if not mine:
            continue
        label = run if len(families) == 1 else f"{run} ({family})"
        levels = [r["concurrency"] for r in mine]
        added = [
            (r["ttft"]["p50"] - direct[(family, r["concurrency"])]["ttft"]["p50"]) * 1000
            if (family, r["concurrency"]) in direct
            else math.nan
            for r in mine
        ]
        latency.plot(levels, added, marker="o", label=label)
        lowest = min(lowest, *(value for value in added if not math.isnan(value)))
        throughput.plot(levels, [r["chunks_per_s"] for r in mine], marker="o", label=label)
    latency.set_xscale("log")
    latency.set_yscale("symlog", linthresh=10)
    latency.set_ylim(bottom=lowest * 1.2)
    latency.set_xlabel("concurrent streams")
    latency.set_ylabel("added TTFT p50 (ms, symlog)")
    latency.set_title("Time to first chunk added over the direct upstream")
    throughput.set_xscale("log")
    throughput.set_yscale("log")
    throughput.set_xlabel("concurrent streams")
    throughput.set_ylabel("chunks/s received by the clients")
    throughput.set_title("Throughput")
    for axes in (latency, throughput):
        axes.grid(True, which="both", alpha=0.3)
        axes.legend()
    plan = document["plan"]
    figure.suptitle(
        f"aibridge bench.run, {document['started']}, commit {document['commit']}: "
        f"{plan['chunks']} chunks {plan['delay'] * 1000:g} ms apart after {plan['ttft'] * 1000:g} ms, "
        f"{document['machine']['cpus']} CPUs",
        fontsize=9,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
