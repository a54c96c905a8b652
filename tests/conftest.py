"""Shared test helpers. Agents only ADD to this file."""

from __future__ import annotations

from pathlib import Path


def shared_data() -> Path:
    """The read-only third-party sample files (/work/shared/data), found relative to the repo."""
    return (Path(__file__).resolve().parents[1] / ".." / "shared" / "data").resolve()
