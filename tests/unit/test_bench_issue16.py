"""`make bench` renders issue 16's table: each figure of the run next to its goal, met or not."""

from __future__ import annotations

from typing import Any

from bench.run import issue16_rows


def _fold(ratio_deltas: float, passthrough: float) -> dict[str, Any]:
    return {"runs": [{"ratio_ours_vs_quix_deltas": ratio_deltas, "passthrough_msgs_per_s": passthrough}]}


def _onboarding(ratio: float, ours: float, rss: float) -> dict[str, Any]:
    run = {"ratio_ours_vs_quix_index_updates": ratio, "ours": {"index_updates_per_s": ours, "rss_mb": rss}}
    return {"images": 1000, "runs": [run]}


def _latency(p99: float, covered: bool = True) -> dict[str, Any]:
    return {"window_s": 1, "latency_p99_s": p99, "coverage_equal_preview": covered}


def test_every_goal_met() -> None:
    rows = issue16_rows(_fold(1.2, 10_000), _onboarding(2.5, 6_000, 250), _latency(1.2))
    assert [r[3] for r in rows] == ["yes", "yes", "yes", "yes", "yes"]


def test_each_goal_missed() -> None:
    rows = issue16_rows(_fold(0.9, 10_000), _onboarding(1.9, 4_000, 320), _latency(1.6))
    assert [r[3] for r in rows] == ["**no**"] * 5


def test_a_latency_run_that_fails_the_coverage_gate_has_no_figure() -> None:
    rows = issue16_rows(None, None, _latency(0.5, covered=False))
    assert rows[0][3] == "n/a"


def test_sections_not_run_give_no_rows() -> None:
    assert issue16_rows(None, None, None) == []
