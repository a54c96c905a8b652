"""`make bench` renders issue 15's table: each figure of the run next to its goal, met or not."""

from __future__ import annotations

from typing import Any

from bench.run import issue15_rows


def _store(rate: float, over_1s: int, ratio: float, rebuild_rate: float = 21_000) -> dict[str, Any]:
    return {
        "projector": {
            "clients": 4,
            "seconds": 600.4,
            "guarded_updates_per_s": rate,
            "batches": 9000,
            "batches_over_1s": over_1s,
            "slowest_batch_s": 0.8,
            "loadavg_start": [1.0, 1.0, 1.0],
            "loadavg_end": [2.0, 1.5, 1.0],
        },
        "rebuild": {
            "events": 200_000,
            "rebuild_events_per_s": rebuild_rate,
            "ratio_vs_raw": ratio,
            "loadavg_start": [3.0, 2.0, 1.0],
            "loadavg_end": [4.0, 2.0, 1.0],
        },
    }


def _e2e(last_max: float, replay_min: float, incomplete: int = 0) -> dict[str, Any]:
    out: dict[str, Any] = {
        "last_result_in_mongo_after_last_send_s": {"median": 2.0, "min": 1.0, "max": last_max, "runs": []},
        "replay_events_per_s": {"median": 30_000, "min": replay_min, "max": 40_000, "runs": []},
        "replay_events_folded": [1, 2, 3],
        "jobs_per_run": [10, 10, 10],
    }
    if incomplete:
        out["mongo_incomplete"] = ["run"] * incomplete
    return out


def test_every_goal_met() -> None:
    rows = issue15_rows(_store(1200.0, 0, 0.7), _e2e(4.0, 21_000))
    assert [r[3] for r in rows] == ["yes", "yes", "yes", "yes"]
    assert "load average [1.0, 1.0, 1.0] → [2.0, 1.5, 1.0]" in rows[0][2]


def test_each_goal_missed_is_marked() -> None:
    assert issue15_rows(_store(999.0, 0, 0.7), None)[0][3] == "**no**"
    assert issue15_rows(_store(1200.0, 1, 0.7), None)[0][3] == "**no**"
    rows = issue15_rows(_store(1200.0, 0, 0.4), _e2e(5.5, 21_000, incomplete=1))
    assert [r[3] for r in rows] == ["yes", "**no**", "**no**", "**no**"]
    assert issue15_rows(_store(1200.0, 0, 0.7, rebuild_rate=19_000), None)[1][3] == "**no**"
    assert len(issue15_rows(None, _e2e(1.0, 19_000))) == 2  # no rebuild figure without section 6


def test_nothing_measured_renders_nothing() -> None:
    assert issue15_rows(None, None) == []
