"""Hypothesis: arbitrary bytes and mutated real documents never make an adapter or the codec raise,
and every refusal says why (non-empty reason / field / message)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.csaf import parse_csaf
from ingest.cyclonedx_vex import parse_cyclonedx_vex
from ingest.detect import parse_file
from ingest.document import load_json_or_yaml
from ingest.openvex import parse_openvex
from ingest.osv import parse_osv
from ingest.result import IngestResult
from ingest.sbom import parse_cyclonedx_sbom, parse_spdx_sbom
from schemas.codec import TOPIC_MODELS, Decoded, Rejected, decode
from schemas.purl import Purl, PurlError, normalise
from tests.conftest import sample_data

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DATA = sample_data()
Adapter = Callable[[bytes, str], IngestResult[Any]]

ADAPTERS: dict[str, tuple[Adapter, list[Path]]] = {
    "osv": (parse_osv, sorted((DATA / "osv").rglob("*.json")) + sorted((DATA / "osv").rglob("*.yaml"))),
    "openvex": (parse_openvex, sorted((DATA / "vex/openvex").glob("*.json"))),
    "cyclonedx-vex": (parse_cyclonedx_vex, sorted((DATA / "vex/cyclonedx").glob("*.json"))),
    "csaf": (parse_csaf, []),
    "cyclonedx": (
        lambda d, s: parse_cyclonedx_sbom(d, s, tenant="t"),
        sorted((DATA / "sbom/cyclonedx").glob("*.json")),
    ),
    "spdx": (lambda d, s: parse_spdx_sbom(d, s, tenant="t", image_digest="sha256:" + "e" * 64), []),
}
ADAPTERS["spdx"][1].extend(sorted((DATA / "sbom/spdx").glob("*.json")))
DOCS = [p.read_bytes() for _, paths in ADAPTERS.values() for p in paths if p.name != "osv-schema.json"]

junk = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


def _check(result: IngestResult[Any], source: str) -> None:
    for error in result.errors:
        assert error.source == source
        assert error.field
        assert error.message
    assert all(isinstance(v, int) for v in result.report.values())


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out.extend(_paths(v, (*prefix, k)))
    elif isinstance(doc, list):
        for i, v in enumerate(doc[:5]):
            out.extend(_paths(v, (*prefix, i)))
    return out


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A real document with a few nodes dropped or replaced by junk of another type."""
    doc: Any = load_json_or_yaml(draw(st.sampled_from(DOCS)), "seed")
    for _ in range(draw(st.integers(1, 4))):
        paths = [p for p in _paths(doc) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent: Any = doc
        for part in path[:-1]:
            parent = parent[part]
        if draw(st.booleans()) and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(junk)
    return json.dumps(doc, default=str).encode()


@FUZZ
@given(st.binary(max_size=300), st.sampled_from(sorted(ADAPTERS)))
def test_adapters_survive_arbitrary_bytes(data: bytes, name: str) -> None:
    result = ADAPTERS[name][0](data, "fuzz.bin")
    _check(result, "fuzz.bin")


@FUZZ
@given(mutated(), st.sampled_from(sorted(ADAPTERS)))
def test_adapters_survive_mutated_documents(data: bytes, name: str) -> None:
    result = ADAPTERS[name][0](data, "mutated.json")
    _check(result, "mutated.json")


@FUZZ
@given(mutated(), st.sampled_from(["sbom", "osv", "vex", "policy", "runtime", "recheck"]))
def test_parse_file_survives(data: bytes, kind: str) -> None:
    _check(parse_file(kind, data, "m.json", tenant="t"), "m.json")


@FUZZ
@given(st.one_of(st.none(), st.binary(max_size=300), mutated()), st.sampled_from(sorted(TOPIC_MODELS)))
def test_codec_never_raises(value: bytes | None, topic: str) -> None:
    result = decode(topic, b"k", value, 200_000)
    if isinstance(result, Rejected):
        assert result.reason in ("oversized", "decode", "validate", "schema-unknown")
        assert result.message
    else:
        assert isinstance(result, Decoded)


@FUZZ
@given(junk.map(lambda j: json.dumps(j).encode()), st.sampled_from(sorted(TOPIC_MODELS)))
def test_codec_json_junk(value: bytes, topic: str) -> None:
    result = decode(topic, None, value, 200_000)
    assert isinstance(result, Rejected)
    assert result.message


@FUZZ
@given(
    st.text(max_size=60)
    | st.from_regex(r"pkg:[a-z]{1,5}/[^@?#]{0,10}(@[^?#]{0,6})?(\?[a-z]=[^#]{0,5})?", fullmatch=True)
)
def test_purl_normalise_never_raises(text: str) -> None:
    result = normalise(text)
    assert isinstance(result, Purl | PurlError)
    if isinstance(result, Purl):
        again = normalise(result.canonical)
        assert isinstance(again, Purl)
        assert again.canonical == result.canonical
