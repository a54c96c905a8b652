"""CycloneDX and SPDX SBOM adapters against every SBOM in the sample data."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from ingest.sbom import parse_cyclonedx_sbom, parse_spdx_sbom
from tests.conftest import sample_data

SBOM = sample_data() / "sbom"
DIGEST = "sha256:" + "c" * 64


def test_every_sbom_file_is_covered() -> None:
    names = {p.relative_to(SBOM).as_posix() for p in SBOM.rglob("*.json")}
    assert names == {
        "cyclonedx/alpine-cyclonedx.json",
        "cyclonedx/cern-lhc-vdm-editor.json",
        "cyclonedx/distroless-cyclonedx.json",
        "spdx/alpine-small-spdx.json",
        "spdx/example11-sbom.spdx.json",
        "spdx/invalid-no-purls-examplemaven.spdx.json",
    }


def test_syft_alpine_cyclonedx() -> None:
    result = parse_cyclonedx_sbom(
        (SBOM / "cyclonedx/alpine-cyclonedx.json").read_bytes(), "a.json", tenant="t1"
    )
    assert result.ok
    [inv] = result.messages
    assert inv.image_digest == "sha256:cbaa390ec61abd889dfa5146a411c11717c19ef9e5e18458dbdc06439076ffe7"
    assert (inv.repository, inv.tags, inv.tenant) == ("docker.io/library/alpine", ["latest"], "t1")
    assert inv.observed_at == datetime(2022, 10, 7, 14, 41, 7, tzinfo=UTC)
    assert inv.source == "urn:uuid:90630c1e-1df2-4d35-85fa-a4e8ebd22d70"
    assert len(inv.components) == 14
    assert result.report == {"components_without_purl": 1, "components": 14}
    first = inv.components[0]
    # syft's pkg:alpine is normalised to the canonical apk type, so OSV "Alpine" advisories meet it.
    assert (first.package, first.version) == ("apk/alpine/alpine-baselayout", "3.2.0-r22")
    assert first.purl.startswith("pkg:apk/alpine/alpine-baselayout@3.2.0-r22?arch=x86_64")
    keys = [(c.package, c.version or "") for c in inv.components]
    assert keys == sorted(keys)


def test_distroless_cyclonedx() -> None:
    [inv] = parse_cyclonedx_sbom(
        (SBOM / "cyclonedx/distroless-cyclonedx.json").read_bytes(), "d.json", tenant="t1"
    ).messages
    assert inv.image_digest == "sha256:6ad5b696af3ca05a048bd29bf0f623040462638cb0b29c8d702cbb2805687388"
    assert (inv.repository, inv.tags) == ("gcr.io/distroless/static", ["nonroot"])
    assert [c.package for c in inv.components] == [
        "deb/debian/base-files",
        "deb/debian/netbase",
        "deb/debian/tzdata",
    ]


def test_cern_cyclonedx_needs_a_digest() -> None:
    data = (SBOM / "cyclonedx/cern-lhc-vdm-editor.json").read_bytes()
    refused = parse_cyclonedx_sbom(data, "cern.json", tenant="t1")
    assert refused.messages == []
    assert [(e.source, e.field) for e in refused.errors] == [("cern.json", "metadata.component")]
    result = parse_cyclonedx_sbom(data, "cern.json", tenant="t1", image_digest=DIGEST, repository="cern/vdm")
    [inv] = result.messages
    assert (inv.image_digest, inv.repository, len(inv.components)) == (DIGEST, "cern/vdm", 43)
    assert {c.package.split("/")[0] for c in inv.components} == {"npm"}
    assert result.report == {"components_without_purl": 0, "components": 43}


@pytest.mark.parametrize(
    ("name", "count", "first"),
    [
        ("spdx/alpine-small-spdx.json", 3, ("apk/alpine/alpine-baselayout", "3.2.0-r22")),
        ("spdx/example11-sbom.spdx.json", 4, ("cargo/hyper", "0.14")),
    ],
)
def test_spdx(name: str, count: int, first: tuple[str, str]) -> None:
    data = (SBOM / name).read_bytes()
    refused = parse_spdx_sbom(data, name, tenant="t1")
    assert [e.field for e in refused.errors] == ["packages"]
    result = parse_spdx_sbom(data, name, tenant="t1", image_digest=DIGEST)
    [inv] = result.messages
    assert len(inv.components) == count
    assert (inv.components[0].package, inv.components[0].version) == first
    assert inv.source.startswith("https://")


def test_spdx_alpine_repository_from_name() -> None:
    data = (SBOM / "spdx/alpine-small-spdx.json").read_bytes()
    [inv] = parse_spdx_sbom(data, "s", tenant="t1", image_digest=DIGEST).messages
    assert inv.repository == "gcr.io/google-containers/alpine-latest"
    assert inv.observed_at == datetime(2022, 9, 24, 17, 27, 55, tzinfo=UTC)


def test_spdx_without_purls_is_refused() -> None:
    name = "spdx/invalid-no-purls-examplemaven.spdx.json"
    result = parse_spdx_sbom((SBOM / name).read_bytes(), name, tenant="t1", image_digest=DIGEST)
    assert result.messages == []
    assert result.report == {"components_without_purl": 6, "components": 0}
    [error] = result.errors
    assert (error.source, error.field) == (name, "packages")
    assert "no component carries a usable purl" in error.message


def test_cyclonedx_duplicates_nested_and_oci_subject() -> None:
    doc = {
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "metadata": {
            "timestamp": "2024-05-01T12:00:00+02:00",
            "component": {
                "type": "container",
                "name": "app",
                "purl": f"pkg:oci/app@{DIGEST}?repository_url=ghcr.io/acme/app&tag=v2",
            },
        },
        "components": [
            {"type": "library", "name": "b", "purl": "pkg:npm/b@2.0.0"},
            {"type": "library", "name": "a", "purl": "pkg:npm/a@1.0.0?x=2"},
            {"type": "library", "name": "a", "purl": "pkg:npm/a@1.0.0?x=1"},
            {"type": "library", "name": "bad", "purl": "not a purl"},
            {
                "type": "application",
                "name": "outer",
                "components": [{"name": "inner", "purl": "pkg:pypi/Inner_Pkg@3"}],
            },
        ],
    }
    result = parse_cyclonedx_sbom(orjson.dumps(doc), "c.json", tenant="t1")
    [inv] = result.messages
    assert inv.image_digest == DIGEST
    assert (inv.repository, inv.tags) == ("ghcr.io/acme/app", ["v2"])
    assert [(c.package, c.purl) for c in inv.components] == [
        ("npm/a", "pkg:npm/a@1.0.0?x=1"),
        ("npm/b", "pkg:npm/b@2.0.0"),
        ("pypi/inner-pkg", "pkg:pypi/inner-pkg@3"),
    ]
    assert result.report == {
        "components_without_purl": 1,
        "components_invalid_purl": 1,
        "duplicates_collapsed": 1,
        "components": 3,
    }
    assert [e.field for e in result.errors] == ["components[3].purl"]
    assert inv.observed_at == datetime(2024, 5, 1, 10, 0, tzinfo=UTC)


def test_not_an_sbom() -> None:
    assert parse_cyclonedx_sbom(b"{}", "x", tenant="t").errors[0].field == "bomFormat"
    assert parse_spdx_sbom(b"[]", "x", tenant="t").errors[0].field == "spdxVersion"
    assert parse_spdx_sbom(b"{", "x", tenant="t").errors[0].field == "$"
