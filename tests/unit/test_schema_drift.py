"""The committed JSON Schemas under schemas/json are exactly what the models produce."""

from __future__ import annotations

import json

from schemas.export import SCHEMA_DIR, drift, file_name, main, render_all
from schemas.messages import ALL_MODELS, Inventory


def test_committed_schemas_match_models() -> None:
    present = {p.name: p.read_text(encoding="utf-8") for p in SCHEMA_DIR.glob("*.json")}
    assert drift(render_all(), present) == [], "run `make schemas` (python -m schemas.export)"
    assert main(["--check"]) == 0


def test_one_file_per_model() -> None:
    assert len({file_name(m) for m in ALL_MODELS}) == len(ALL_MODELS)
    assert file_name(Inventory) == "scheduler.inventory.v1.json"


def test_rendering_is_stable_and_sorted() -> None:
    text = render_all()["scheduler.inventory.v1.json"]
    assert text.endswith("}\n")
    assert json.dumps(json.loads(text), sort_keys=True, indent=2, ensure_ascii=False) + "\n" == text
    assert json.loads(text)["$id"] == "scheduler.inventory@1"


def test_drift_detects_changed_missing_and_stale() -> None:
    assert drift({"a": "1", "b": "2"}, {"a": "1", "b": "3", "c": "4"}) == ["b", "c"]
    assert drift({"a": "1"}, {}) == ["a"]
