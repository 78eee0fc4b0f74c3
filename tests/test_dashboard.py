"""The Grafana dashboard (deploy/grafana/aibridge.json) against the metrics the code exposes: every metric a
panel queries must exist, and every metric the code exposes must appear on some panel."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from shared.metrics import ApiMetrics, WorkerMetrics

DASHBOARD = Path(__file__).resolve().parent.parent / "deploy" / "grafana" / "aibridge.json"
STRING_LITERAL = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
METRIC_NAME = re.compile(r"\baibridge_[a-zA-Z0-9_:]*")


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def all_panels(panels: list[dict]) -> Iterator[dict]:
    """Every panel, including those nested in collapsed rows."""
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


def exprs(dashboard: dict) -> list[str]:
    return [
        target["expr"]
        for panel in all_panels(dashboard["panels"])
        for target in panel.get("targets", [])
        if target.get("expr")
    ]


def referenced_metrics(expr: str) -> set[str]:
    """Metric names in a PromQL expression (label values in quotes are not names)."""
    return set(METRIC_NAME.findall(STRING_LITERAL.sub('""', expr)))


def exposed_families() -> dict[str, set[str]]:
    """Family name -> the sample names the code exposes for it, as the registries produce them. A labelled
    counter has no samples until its first increment; its one sample name is then `<family>_total`; a
    labelled gauge's is its family's name."""
    registries: list[CollectorRegistry] = [
        ApiMetrics().registry,
        WorkerMetrics(lambda: {"written": 0, "dropped": 0, "failures": 0}).registry,
    ]
    families: dict[str, set[str]] = {}
    for registry in registries:
        for family in registry.collect():
            names = families.setdefault(family.name, set())
            names.update(sample.name for sample in family.samples)
            if family.type == "counter":
                names.add(f"{family.name}_total")
            elif family.type == "gauge":
                names.add(family.name)
    return families


def test_dashboard_parses_with_title_and_panels(dashboard):
    assert dashboard["title"]
    assert dashboard["schemaVersion"] == 39
    panels = list(all_panels(dashboard["panels"]))
    assert panels
    ids = [panel["id"] for panel in panels]
    assert all(isinstance(panel_id, int) for panel_id in ids)
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {ids}"


def test_panels_have_a_layout_that_does_not_overlap(dashboard):
    cells: dict[tuple[int, int], int] = {}
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        assert pos["w"] > 0 and pos["h"] > 0 and pos["x"] >= 0 and pos["y"] >= 0, panel["title"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"panels {cells[(x, y)]} and {panel['id']} overlap"
                cells[(x, y)] = panel["id"]


def test_queries_use_the_prometheus_datasource_variable(dashboard):
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    inputs = {i["name"] for i in dashboard.get("__inputs", []) if i.get("pluginId") == "prometheus"}
    allowed = {f"${{{name}}}" for name, v in variables.items() if v["type"] == "datasource"}
    allowed |= {f"${name}" for name, v in variables.items() if v["type"] == "datasource"}
    allowed |= {f"${{{name}}}" for name in inputs}
    assert allowed, "no prometheus datasource variable or input"
    for panel in all_panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            datasource = target.get("datasource", panel.get("datasource"))
            assert datasource["type"] == "prometheus", panel["title"]
            assert datasource["uid"] in allowed, panel["title"]


def test_every_query_names_an_exposed_metric(dashboard):
    exposed = set().union(*exposed_families().values())
    for expr in exprs(dashboard):
        names = referenced_metrics(expr)
        assert names, f"no aibridge metric in {expr!r}"
        unknown = names - exposed
        assert not unknown, f"{expr!r} queries metrics the code does not expose: {sorted(unknown)}"


def test_every_exposed_metric_is_on_the_dashboard(dashboard):
    used = set().union(*(referenced_metrics(expr) for expr in exprs(dashboard)))
    missing = sorted(family for family, names in exposed_families().items() if not names & used)
    assert not missing, f"metrics exposed but on no panel: {missing}"
