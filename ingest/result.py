"""What every format adapter returns: the messages it could build, precise errors, and counts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class IngestError:
    """One problem in one input file. ``field`` is a JSON path (``affected[0].package.name``, ``$`` = root).

    Warnings describe data that was skipped or kept with doubt; errors mean part of the input was refused.
    """

    source: str
    field: str
    message: str
    level: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        return f"{self.source}: {self.field}: {self.message}"


@dataclass(frozen=True)
class IngestResult(Generic[M]):
    messages: list[M] = field(default_factory=list)
    errors: list[IngestError] = field(default_factory=list)
    report: dict[str, int] = field(default_factory=dict)
    format: str = ""

    @property
    def ok(self) -> bool:
        return not any(e.level == "error" for e in self.errors)


def count(report: dict[str, int], key: str, n: int = 1) -> None:
    report[key] = report.get(key, 0) + n
