"""`make bench` renders issue 17's table from section 7: each figure next to its goal, met or not."""

from __future__ import annotations

from typing import Any

from bench.run import issue17_rows


def _recovery(intact: float, moved: float, sigkill: float) -> dict[str, Any]:
    return {
        "records": 1_000_000,
        "cases": [
            {
                "case": "rocksdb, local state deleted / moved partition (full replay)",
                "process_start_to_ready_seconds": moved,
            },
            {
                "case": "rocksdb, restart with local state intact (tail only)",
                "process_start_to_ready_seconds": intact,
            },
        ],
        "standby": {"sigterm_to_processing_seconds": 2.9},
        "failover": {"session_timeout_seconds": 10.0, "sigkill_to_processing_seconds": sigkill},
    }


def test_every_goal_met() -> None:
    rows = issue17_rows(_recovery(2.6, 25.0, 10.4))
    assert [r[3] for r in rows] == ["yes", "yes", "yes", "n/a"]
    assert "standby: 2.9 s" in rows[1][2]


def test_each_goal_missed() -> None:
    rows = issue17_rows(_recovery(5.1, 30.5, 15.1))
    assert [r[3] for r in rows[:3]] == ["**no**"] * 3


def test_no_recovery_section_gives_no_rows() -> None:
    assert issue17_rows(None) == []
