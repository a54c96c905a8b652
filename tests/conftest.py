"""Shared test helpers. Agents only ADD to this file."""

from __future__ import annotations

from pathlib import Path


def sample_data() -> Path:
    """The third-party sample files the tests read (tests/data; sources and licences in its README).

    Missing data must fail the run, not thin it out: parametrised tests would otherwise collect zero
    cases and pytest would report them as skipped."""
    path = Path(__file__).resolve().parent / "data"
    if not (path / "README.md").is_file():
        raise FileNotFoundError(f"the sample data is missing: expected {path}")
    return path
