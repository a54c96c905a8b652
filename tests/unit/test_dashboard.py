"""ops/grafana/scheduler-worker.json: valid dashboard whose queries only use metrics telemetry.metrics
exports (a renamed metric must break this test, not the dashboard in production)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from telemetry.metrics import series_names

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "ops" / "grafana" / "scheduler-worker.json"
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_IDENT = re.compile(r"(?<![\w:$])[a-zA-Z_:][\w:]*")


def metric_names(expr: str) -> set[str]:
    """Identifiers in a PromQL expression that name scheduler metrics (label values stripped first)."""
    return {name for name in _IDENT.findall(_STRINGS.sub('""', expr)) if name.startswith("scheduler_")}


def load() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return doc


def panels(doc: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for panel in doc["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))  # collapsed rows nest their panels
    return out


def exprs(doc: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in panels(doc) for t in p.get("targets", []) if t.get("expr")]


def test_identity_and_variables() -> None:
    doc = load()
    assert doc["uid"] == "scheduler-worker-observability"
    assert doc["title"] == "Scheduler worker"
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["class"]["type"] == "query"
    assert variables["class"]["definition"] == "label_values(scheduler_runner_backlog, class)"
    assert variables["class"]["query"]["query"] == "label_values(scheduler_runner_backlog, class)"


def test_panels_are_well_formed() -> None:
    doc = load()
    ids = [p["id"] for p in panels(doc)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in panels(doc):
        assert {"h", "w", "x", "y"} <= set(p["gridPos"]), p["title"]
        assert p["gridPos"]["x"] + p["gridPos"]["w"] <= 24, p["title"]
        if p["type"] == "row":
            continue
        assert p["targets"], p["title"]
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        for target in p["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", p["title"]


def test_required_panels_exist() -> None:
    used = set().union(*(metric_names(e) for e in exprs(load())))
    for name in (
        "scheduler_planner_runs_total",
        "scheduler_planner_latency_seconds_bucket",
        "scheduler_runner_images_total",
        "scheduler_runner_delta_total",
        "scheduler_runner_delta_critical_total",
        "scheduler_runner_delta_kev_total",
        "scheduler_runner_backlog",
        "scheduler_runs_active",
        "scheduler_consumer_lag",
        "scheduler_deadletters_total",
        "scheduler_sla_breaches_total",
        "scheduler_retries_total",
        "scheduler_projection_lag",
        "scheduler_executor_latency_seconds_bucket",
        "scheduler_duplicates_skipped_total",
    ):
        assert name in used, f"no panel queries {name}"


def test_every_metric_queried_is_exported_by_telemetry_metrics() -> None:
    exported = series_names()
    missing = {name: expr for expr in exprs(load()) for name in metric_names(expr) if name not in exported}
    assert not missing, f"dashboard queries metrics telemetry.metrics does not export: {missing}"


def test_the_name_check_would_catch_a_typo() -> None:
    bad = 'sum by (class) (rate(scheduler_retry_total{class=~"$class"}[5m]))'
    assert metric_names(bad) == {"scheduler_retry_total"}
    assert "scheduler_retry_total" not in series_names()
    # Histogram series need their suffix; the bare name is not a series.
    assert "scheduler_planner_latency_seconds" not in series_names()
    assert metric_names('x{job="scheduler_fake"} + scheduler_runs_active') == {"scheduler_runs_active"}


def test_every_query_parses(tmp_path: Path) -> None:
    """Each expression, with Grafana's variables filled in, as a recording rule through promtool."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool not found on PATH: apt-get install prometheus (Debian's package ships it)")
    substitutions = {"$__rate_interval": "5m", "$__range": "1h", "$class": ".*"}
    rules = []
    for i, expr in enumerate(exprs(load())):
        for var, value in substitutions.items():
            expr = expr.replace(var, value)
        assert "$" not in expr, expr
        rules.append({"record": f"dashboard:panel_{i}", "expr": expr})
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    proc = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
