"""JSON Schema for every message model, committed under schemas/json so non-Python producers can validate.

``python -m schemas.export`` rewrites the files; ``--check`` exits 1 when a committed file differs from
what the models produce (or is missing, or is stale), so CI catches a model change without its schema.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pydantic import BaseModel

from schemas.audit import AUDIT_MODELS
from schemas.messages import ALL_MODELS, schema_id_of

SCHEMA_DIR = Path(__file__).resolve().parent / "json"


def file_name(model: type[BaseModel]) -> str:
    """``scheduler.inventory@1`` → ``scheduler.inventory.v1.json`` ('@' is awkward in paths and URLs)."""
    return schema_id_of(model).replace("@", ".v") + ".json"


def render(model: type[BaseModel]) -> str:
    schema = model.model_json_schema(by_alias=True)
    schema["$id"] = schema_id_of(model)
    return json.dumps(schema, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def render_all() -> dict[str, str]:
    return {file_name(m): render(m) for m in (*ALL_MODELS, *AUDIT_MODELS)}


def drift(expected: dict[str, str], present: dict[str, str]) -> list[str]:
    """File names whose committed text differs from the models' (missing, changed or stale)."""
    return sorted(
        name for name in expected.keys() | present.keys() if expected.get(name) != present.get(name)
    )


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    expected = render_all()
    present = {p.name: p.read_text(encoding="utf-8") for p in SCHEMA_DIR.glob("*.json")}
    if "--check" in args:
        changed = drift(expected, present)
        for name in changed:
            print(f"schema drift: schemas/json/{name}", file=sys.stderr)
        return 1 if changed else 0
    SCHEMA_DIR.mkdir(exist_ok=True)
    for name in present.keys() - expected.keys():
        (SCHEMA_DIR / name).unlink()
    for name, text in expected.items():
        if present.get(name) != text:
            (SCHEMA_DIR / name).write_text(text, encoding="utf-8")
    print(f"wrote {len(expected)} schemas to {SCHEMA_DIR}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
