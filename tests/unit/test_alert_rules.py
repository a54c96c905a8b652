"""ops/prometheus/alerts.yml: promtool accepts it, its unit tests pass, and every metric it uses is one
telemetry.metrics exports. promtool is required: a missing promtool is a failure, not a skip, so an
environment that cannot check the rules never reports them as fine."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from telemetry.metrics import series_names

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "ops" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "ops" / "prometheus" / "alerts_test.yml"
RUNBOOK = ROOT / "ops" / "worker.md"
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_IDENT = re.compile(r"(?<![\w:$])[a-zA-Z_:][\w:]*")
EXPECTED_ALERTS = {
    "SchedulerPlannerFailures",
    "SchedulerPlanningLatencyHigh",
    "SchedulerBacklogNotDraining",
    "SchedulerRunsStuck",
    "SchedulerDeadLettersAppearing",
    "SchedulerSlaBreaches",
    "SchedulerConsumerLagGrowing",
    "SchedulerProjectionLag",
    "SchedulerWorkerDown",
    "SchedulerPublishStalled",
    "SchedulerScheduleOccurrencesMissed",
    "SchedulerScheduleLagHigh",
}


def metric_names(expr: str) -> set[str]:
    return {name for name in _IDENT.findall(_STRINGS.sub('""', expr)) if name.startswith("scheduler_")}


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool not found on PATH: apt-get install prometheus "
            "(Debian's package ships promtool; the Makefile installs it when missing)"
        )
    return path


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    (group,) = doc["groups"]
    assert group["name"] == "stella-sched"
    out: list[dict[str, Any]] = group["rules"]
    return out


def github_anchor(heading: str) -> str:
    """GitHub's heading slug: lower case, punctuation dropped, spaces to hyphens."""
    slug = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return slug.replace(" ", "-")


def test_promtool_check_rules() -> None:
    proc = subprocess.run(
        [promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_promtool_unit_tests() -> None:
    # promtool resolves rule_files relative to the test file, so run it from anywhere.
    proc = subprocess.run(
        [promtool(), "test", "rules", str(RULE_TESTS)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_agreed_alerts_exist_with_labels_and_annotations() -> None:
    found = rules()
    assert {r["alert"] for r in found} == EXPECTED_ALERTS
    for rule in found:
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        assert {"summary", "description", "runbook_url"} <= set(rule["annotations"]), rule["alert"]
        assert rule["annotations"]["runbook_url"] == f"ops/worker.md#{rule['alert'].lower()}"


def test_runbook_has_a_section_for_every_alert() -> None:
    anchors = {
        github_anchor(line.lstrip("#")) for line in RUNBOOK.read_text().splitlines() if line.startswith("#")
    }
    for rule in rules():
        anchor = rule["annotations"]["runbook_url"].split("#", 1)[1]
        assert anchor in anchors, f"ops/worker.md has no heading for #{anchor}"


def test_every_metric_in_alert_exprs_is_exported() -> None:
    exported = series_names()
    for rule in rules():
        used = metric_names(rule["expr"])
        assert used, rule["alert"]
        assert used <= exported, f"{rule['alert']} uses {sorted(used - exported)}"


def test_the_important_alerts_have_unit_tests() -> None:
    tested = {
        case["alertname"]
        for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert {
        "SchedulerDeadLettersAppearing",
        "SchedulerSlaBreaches",
        "SchedulerWorkerDown",
        "SchedulerBacklogNotDraining",
    } <= tested
