"""Shared test helpers. Agents only ADD to this file."""

from __future__ import annotations

from pathlib import Path


def shared_data() -> Path:
    """The read-only third-party sample files (../shared/data beside the repo).

    Missing data must fail the run, not thin it out: parametrised tests would otherwise collect zero
    cases and pytest would report them as skipped."""
    path = (Path(__file__).resolve().parents[1] / ".." / "shared" / "data").resolve()
    if not (path / "README.md").is_file():
        raise FileNotFoundError(f"the shared sample data is missing: expected {path} (../shared/data)")
    return path
