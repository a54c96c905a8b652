"""OpenVEX, CycloneDX VEX and CSAF VEX adapters against every VEX file in the sample data plus fixtures."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from ingest.csaf import parse_csaf
from ingest.cyclonedx_vex import parse_cyclonedx_vex
from ingest.openvex import parse_openvex
from schemas.messages import VexProduct
from tests.conftest import sample_data

VEX = sample_data() / "vex"
ALPINE = "sha256:124c7d2707904eea7431fffe91522a01e5a861a624ee31d03372cc1d138a3126"

# file → (statements emitted, statements skipped, {(vulnerability, status)}, unresolved products)
OPENVEX = {
    "demo.vex.json": (1, 0, {("CVE-2014-123456", "fixed")}, 0),
    "images.vex.json": (2, 2, {("CVE-1234-5678", "under_investigation")}, 2),
    "open-vex-affected.json": (1, 0, {("CVE-1234-5678", "affected")}, 0),
    "open-vex-not-affected.json": (1, 0, {("CVE-2023-12345", "not_affected")}, 0),
    "v0.2.0.json": (
        5,
        0,
        {
            ("CVE-2023-1255", "fixed"),
            ("CVE-2023-2650", "fixed"),
            ("CVE-2023-2975", "fixed"),
            ("CVE-2023-3446", "not_affected"),
            ("CVE-2023-3817", "not_affected"),
        },
        0,
    ),
    "v001-1.vex.json": (1, 0, {("CVE-1234-5678", "under_investigation")}, 0),
    "v020-1.vex.json": (1, 0, {("CVE-9876-54321", "under_investigation")}, 0),
}


def test_every_openvex_file_is_covered() -> None:
    assert {p.name for p in (VEX / "openvex").iterdir()} == set(OPENVEX)


@pytest.mark.parametrize("name", sorted(OPENVEX))
def test_openvex_file(name: str) -> None:
    result = parse_openvex((VEX / "openvex" / name).read_bytes(), name)
    emitted, skipped, pairs, unresolved = OPENVEX[name]
    assert result.ok
    assert len(result.messages) == emitted
    assert result.report["statements_skipped"] == skipped
    assert result.report.get("products_unresolved", 0) == unresolved
    assert {(m.vulnerability, m.status) for m in result.messages} == pairs
    assert all(m.format == "openvex" and m.products for m in result.messages)
    assert all(e.source == name for e in result.errors)


def test_openvex_020_subcomponents_scoped_to_image() -> None:
    result = parse_openvex((VEX / "openvex" / "v0.2.0.json").read_bytes(), "v0.2.0.json")
    first = result.messages[0]
    assert first.products == [
        VexProduct(
            purl="pkg:apk/alpine/libcrypto3@3.0.8-r3",
            package="apk/alpine/libcrypto3",
            version="3.0.8-r3",
            image_digest=ALPINE,
        ),
        VexProduct(
            purl="pkg:apk/alpine/libssl3@3.0.8-r3",
            package="apk/alpine/libssl3",
            version="3.0.8-r3",
            image_digest=ALPINE,
        ),
    ]
    not_affected = result.messages[3]
    assert not_affected.justification == "vulnerable_code_not_present"
    assert not_affected.document_id.endswith("c78")
    assert not_affected.statement_id == not_affected.document_id + "#3"


def test_openvex_001_image_product_and_unresolved_names() -> None:
    result = parse_openvex((VEX / "openvex" / "images.vex.json").read_bytes(), "images.vex.json")
    image, tag_only = result.messages
    assert (
        image.products[0].image_digest
        == "sha256:f271e74b17ced29b915d351685fd4644785c6d1559dd1f2d4189a5e851ef753a"
    )
    assert tag_only.products[0].package == "oci/kube-apiserver"
    assert tag_only.products[0].image_digest is None
    fields = {e.field for e in result.errors}
    assert {"statements[1].products[0]", "statements[2].products[0]"} <= fields


@pytest.mark.parametrize(
    ("statement", "field"),
    [
        ({"products": ["pkg:npm/x@1"], "status": "affected"}, "statements[0].vulnerability"),
        ({"vulnerability": "CVE-1", "products": ["pkg:npm/x@1"], "status": "bogus"}, "statements[0].status"),
        ({"vulnerability": "CVE-1", "products": [], "status": "fixed"}, "statements[0].products"),
    ],
)
def test_openvex_invalid_statement(statement: dict[str, Any], field: str) -> None:
    doc = {"@context": "https://openvex.dev/ns/v0.2.0", "@id": "d", "timestamp": "2024-01-01T00:00:00Z"}
    result = parse_openvex(orjson.dumps({**doc, "statements": [statement]}), "bad.json")
    assert result.messages == []
    assert field in {e.field for e in result.errors if e.level == "error"}


# ---------------------------------------------------------------- CycloneDX VEX

CDX = {
    "vex-affected.json": "affected",
    "vex-fixed.json": "fixed",
    "vex-not_affected.json": "not_affected",
    "vex-under_investigation.json": "under_investigation",
}


@pytest.mark.parametrize("name", sorted(CDX))
def test_cyclonedx_vex_sample_refs_do_not_resolve(name: str) -> None:
    """The CISA samples reference a product by a bom-ref that has no purl: reported, never guessed."""
    result = parse_cyclonedx_vex((VEX / "cyclonedx" / name).read_bytes(), name)
    assert result.messages == []
    assert result.report == {"statements": 1, "statements_skipped": 1, "products_unresolved": 1}
    assert result.errors[0].field == "vulnerabilities[0].affects[0].ref"
    assert result.errors[0].source == name


@pytest.mark.parametrize("name", sorted(CDX))
def test_cyclonedx_vex_state_mapping(name: str) -> None:
    doc = orjson.loads((VEX / "cyclonedx" / name).read_bytes())
    doc["metadata"]["component"]["purl"] = "pkg:maven/com.example/def@1.0"
    result = parse_cyclonedx_vex(orjson.dumps(doc), name)
    [statement] = result.messages
    assert statement.status == CDX[name]
    assert statement.vulnerability == "CVE-2021-44228"
    assert statement.products[0].package == "maven/com.example/def"
    assert statement.format == "cyclonedx"


def test_cyclonedx_vex_bom_link_purl_and_false_positive() -> None:
    doc = {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": "urn:uuid:3e671687-395b-41f5-a30f-a58921a69b79",
        "version": 1,
        "metadata": {"timestamp": "2024-03-01T00:00:00Z"},
        "components": [
            {
                "bom-ref": "lib",
                "type": "library",
                "name": "log4j-core",
                "purl": "pkg:maven/org.apache/log4j-core@2.14.1",
            },
            {"bom-ref": "img", "type": "container", "name": "app", "version": "sha256:" + "a" * 64},
        ],
        "vulnerabilities": [
            {
                "id": "CVE-2021-44228",
                "references": [{"id": "GHSA-jfh8-c2jp-5v3q", "source": {"name": "GitHub"}}],
                "analysis": {"state": "false_positive", "justification": "code_not_reachable"},
                "affects": [
                    {"ref": "urn:cdx:3e671687-395b-41f5-a30f-a58921a69b79/1#lib"},
                    {"ref": "pkg:npm/left-pad@1.0.0"},
                    {"ref": "img"},
                    {"ref": "urn:cdx:other/1#elsewhere"},
                ],
            }
        ],
    }
    result = parse_cyclonedx_vex(orjson.dumps(doc), "bom.json")
    [st] = result.messages
    assert st.status == "not_affected"
    assert st.justification == "code_not_reachable"
    assert st.aliases == ["GHSA-jfh8-c2jp-5v3q"]
    assert {p.package for p in st.products} == {"maven/org.apache/log4j-core", "npm/left-pad", None}
    assert any(p.image_digest == "sha256:" + "a" * 64 for p in st.products)
    assert result.report["products_unresolved"] == 1
    assert [e.field for e in result.errors] == ["vulnerabilities[0].affects[3].ref"]


def test_cyclonedx_vex_missing_state() -> None:
    doc = {
        "bomFormat": "CycloneDX",
        "vulnerabilities": [{"id": "CVE-1", "affects": [{"ref": "pkg:npm/x@1"}]}],
    }
    result = parse_cyclonedx_vex(orjson.dumps(doc), "b.json")
    assert result.messages == []
    assert "vulnerabilities[0].analysis.state" in {e.field for e in result.errors}


# ---------------------------------------------------------------- CSAF

IMAGE = "sha256:" + "b" * 64
CSAF_DOC: dict[str, Any] = {
    "document": {
        "category": "csaf_vex",
        "csaf_version": "2.0",
        "publisher": {"category": "vendor", "name": "Example", "namespace": "https://example.com"},
        "title": "Example VEX for openssl",
        "tracking": {
            "id": "EXAMPLE-VEX-2024-0001",
            "current_release_date": "2024-02-01T10:00:00Z",
            "initial_release_date": "2024-01-30T10:00:00Z",
            "revision_history": [{"date": "2024-02-01T10:00:00Z", "number": "1", "summary": "Initial"}],
            "status": "final",
            "version": "1",
        },
    },
    "product_tree": {
        "branches": [
            {
                "category": "vendor",
                "name": "Example",
                "branches": [
                    {
                        "category": "product_name",
                        "name": "openssl",
                        "branches": [
                            {
                                "category": "product_version",
                                "name": "3.0.8-r3",
                                "product": {
                                    "product_id": "openssl-3.0.8",
                                    "name": "openssl 3.0.8-r3",
                                    "product_identification_helper": {
                                        "purl": "pkg:apk/alpine/openssl@3.0.8-r3"
                                    },
                                },
                            },
                            {
                                "category": "product_version",
                                "name": "3.1.4-r0",
                                "product": {
                                    "product_id": "openssl-3.1.4",
                                    "name": "openssl 3.1.4-r0",
                                    "product_identification_helper": {
                                        "purl": "pkg:apk/alpine/openssl@3.1.4-r0"
                                    },
                                },
                            },
                        ],
                    }
                ],
            }
        ],
        "full_product_names": [
            {
                "product_id": "app-image",
                "name": "app image",
                "product_identification_helper": {"purl": f"pkg:oci/app@{IMAGE}"},
            },
            {"product_id": "platform", "name": "Example Linux 9"},
            {"product_id": "nameless", "name": "a product with no identifiers"},
        ],
        "relationships": [
            {
                "category": "default_component_of",
                "product_reference": "openssl-3.0.8",
                "relates_to_product_reference": "app-image",
                "full_product_name": {"product_id": "app-image:openssl-3.0.8", "name": "openssl in app"},
            },
            {
                "category": "default_component_of",
                "product_reference": "openssl-3.1.4",
                "relates_to_product_reference": "platform",
                "full_product_name": {"product_id": "platform:openssl-3.1.4", "name": "openssl on EL9"},
            },
        ],
    },
    "vulnerabilities": [
        {
            "cve": "CVE-2023-3817",
            "ids": [{"system_name": "GHSA", "text": "GHSA-xxxx-yyyy-zzzz"}],
            "product_status": {
                "known_not_affected": ["app-image:openssl-3.0.8", "nameless"],
                "fixed": ["platform:openssl-3.1.4"],
                "under_investigation": ["openssl-3.1.4"],
            },
            "flags": [{"label": "vulnerable_code_not_present", "product_ids": ["app-image:openssl-3.0.8"]}],
        },
        {"notes": [{"category": "description", "text": "no id"}]},
    ],
}


def test_csaf_vex() -> None:
    result = parse_csaf(orjson.dumps(CSAF_DOC), "csaf.json")
    by_status = {m.status: m for m in result.messages}
    assert set(by_status) == {"not_affected", "fixed", "under_investigation"}
    na = by_status["not_affected"]
    assert na.justification == "vulnerable_code_not_present"
    assert na.products == [
        VexProduct(
            purl="pkg:apk/alpine/openssl@3.0.8-r3",
            package="apk/alpine/openssl",
            version="3.0.8-r3",
            image_digest=IMAGE,
        )
    ]
    assert na.aliases == ["GHSA-xxxx-yyyy-zzzz"]
    assert na.statement_id == "EXAMPLE-VEX-2024-0001#0:not_affected:vulnerable_code_not_present"
    assert by_status["fixed"].products[0].version == "3.1.4-r0"
    assert by_status["fixed"].products[0].image_digest is None
    assert all(m.format == "csaf" and m.vulnerability == "CVE-2023-3817" for m in result.messages)
    assert result.report["products_unresolved"] == 1
    fields = {e.field for e in result.errors}
    assert "vulnerabilities[0].product_status.known_not_affected[1]" in fields
    assert "vulnerabilities[1].cve" in fields


def test_csaf_without_tracking() -> None:
    doc = {**CSAF_DOC, "document": {"category": "csaf_vex", "csaf_version": "2.0"}}
    result = parse_csaf(orjson.dumps(doc), "c.json")
    assert result.messages == []
    assert {"document.tracking.id", "document.tracking.current_release_date"} <= {
        e.field for e in result.errors
    }
