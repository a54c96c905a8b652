"""OSV adapter against every record in the sample data (JSON, PyPA YAML, GHSA, invalid) plus edge cases."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from ingest.cvss import base_score_tenths, rating
from ingest.osv import parse_osv
from tests.conftest import sample_data

OSV = sample_data() / "osv"

# file → (id, severity, aliases, {package key: (ranges, versions)})
EXPECTED = {
    "GHSA-9v2f-6vcg-3hgv.json": (
        "GHSA-9v2f-6vcg-3hgv",
        "critical",
        ["CVE-2024-39236"],
        {"pypi/gradio": (0, 2)},
    ),
    "GO-2024-2963.json": ("GO-2024-2963", "unknown", ["CVE-2024-24791"], {"golang/stdlib": (1, 0)}),
    "MAL-2024-10238.json": ("MAL-2024-10238", "critical", [], {"pypi/123bla": (0, 1)}),
    "PYSEC-2023-74.json": (
        "PYSEC-2023-74",
        "unknown",
        ["CVE-2023-32681", "GHSA-j8r2-6x86-q33q"],
        {"pypi/requests": (2, 66)},
    ),
    "multiple_ranges_in_package.osv.json": (
        "GHSA-9qj7-jvg4-qr2x",
        "unknown",
        ["CVE-2013-2119"],
        {"gem/passenger": (1, 0)},
    ),
    "pypi_normalize.osv.json": (
        "GHSA-p44j-xrqg-4xrr",
        "unknown",
        ["CVE-2021-21337"],
        {"pypi/products-pluggableauthservice": (1, 0)},
    ),
    "withdrawn.osv.json": (
        "GHSA-35c4-f3rq-f9g3",
        "unknown",
        ["CVE-2015-3227"],
        {"gem/activesupport": (1, 0)},
    ),
    "ghsa/GHSA-6fc8-4gx4-v693.json": (
        "GHSA-6fc8-4gx4-v693",
        "medium",
        ["CVE-2021-32640"],
        {"npm/ws": (3, 0)},
    ),
    "ghsa/GHSA-f8q6-p94x-37v3.json": (
        "GHSA-f8q6-p94x-37v3",
        "high",
        ["CVE-2022-3517"],
        {"npm/minimatch": (1, 0)},
    ),
    "ghsa/GHSA-gxpj-cx7g-858c.json": (
        "GHSA-gxpj-cx7g-858c",
        "low",
        ["CVE-2017-16137"],
        {"npm/debug": (4, 0)},
    ),
    "ghsa/GHSA-pc5p-h8pf-mvwp.json": ("GHSA-pc5p-h8pf-mvwp", "medium", [], {"npm/https-proxy-agent": (1, 0)}),
    "ghsa/GHSA-vh95-rmgr-6w4m.json": (
        "GHSA-vh95-rmgr-6w4m",
        "medium",
        ["CVE-2020-7598"],
        {"npm/minimist": (2, 0)},
    ),
    "pypa/PYSEC-2019-217.yaml": (
        "PYSEC-2019-217",
        "unknown",
        ["CVE-2019-10906", "GHSA-462w-v97r-4m45"],
        {"pypi/jinja2": (1, 31)},
    ),
    "pypa/PYSEC-2021-59.yaml": (
        "PYSEC-2021-59",
        "unknown",
        ["CVE-2021-28363", "GHSA-5phf-pp7p-vc2r"],
        {"pypi/urllib3": (2, 4)},
    ),
    "pypa/PYSEC-2024-56.yaml": ("PYSEC-2024-56", "unknown", ["CVE-2024-38875"], {"pypi/django": (1, 21)}),
    # Structurally valid: the linter flags "Gradi0" only because it is not on PyPI (a network check).
    "invalid/nopackage-GHSA-9v2f-6vcg-3hgv.json": (
        "GHSA-9v2f-6vcg-3hgv",
        "critical",
        ["CVE-2024-39236"],
        {"pypi/gradi0": (0, 1)},
    ),
}
# file → set of (field, message fragment) errors that must refuse the record
REJECTED = {
    "invalid/nointroduced-CVE-2023-41045.json": {
        ("affected[0].package", "required"),
        ("affected[0].ranges[0].events", "no 'introduced' event"),
    },
    "osv-schema.json": {("id", "required"), ("modified", "required")},
}


def test_every_osv_file_is_covered() -> None:
    files = {p.relative_to(OSV).as_posix() for p in OSV.rglob("*") if p.suffix in (".json", ".yaml")}
    assert files == set(EXPECTED) | set(REJECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_osv_file_converts(name: str) -> None:
    result = parse_osv((OSV / name).read_bytes(), name)
    adv_id, severity, aliases, packages = EXPECTED[name]
    assert result.ok, result.errors
    assert result.report["advisories"] == 1
    [adv] = result.messages
    assert (adv.id, adv.severity, adv.aliases) == (adv_id, severity, aliases)
    assert {a.package: (len(a.ranges), len(a.versions)) for a in adv.affected} == packages


@pytest.mark.parametrize("name", sorted(REJECTED))
def test_invalid_osv_file_is_refused_precisely(name: str) -> None:
    result = parse_osv((OSV / name).read_bytes(), name)
    assert result.messages == []
    assert result.report["records_rejected"] == 1
    found = {(e.field, e.message) for e in result.errors if e.level == "error"}
    assert all(e.source == name for e in result.errors)
    for field, fragment in REJECTED[name]:
        assert any(f == field and fragment in m for f, m in found), (field, fragment, found)


def test_yaml_versions_stay_text() -> None:
    result = parse_osv((OSV / "pypa/PYSEC-2019-217.yaml").read_bytes(), "PYSEC-2019-217.yaml")
    [adv] = result.messages
    [pkg] = adv.affected
    assert "2.10" in pkg.versions
    assert "2.1" in pkg.versions
    assert pkg.ranges[0].events[1].fixed == "2.10.1"
    assert adv.modified == datetime(2021, 11, 22, 4, 57, 52, tzinfo=UTC)


def test_ghsa_details() -> None:
    [adv] = parse_osv((OSV / "ghsa/GHSA-pc5p-h8pf-mvwp.json").read_bytes(), "x").messages
    assert adv.cvss == "CVSS:3.1/AV:A/AC:H/PR:N/UI:N/S:C/C:H/I:N/A:N/"
    [gxpj] = parse_osv((OSV / "ghsa/GHSA-gxpj-cx7g-858c.json").read_bytes(), "x").messages
    # Four affected entries for one package merge into one package with four ranges.
    assert [r.events[0].introduced for r in gxpj.affected[0].ranges] == ["0", "3.0.0", "3.2.0", "4.0.0"]


def test_git_ranges_kept_with_repo() -> None:
    [adv] = parse_osv((OSV / "PYSEC-2023-74.json").read_bytes(), "x").messages
    git = [r for r in adv.affected[0].ranges if r.type == "GIT"]
    assert git[0].repo == "https://github.com/psf/requests"
    assert git[0].events[1].fixed == "74ea7cf7a6a27a4eeb2ae24e162bcc942a6706d5"


def test_withdrawn_and_invalid_version_warning() -> None:
    [adv] = parse_osv((OSV / "withdrawn.osv.json").read_bytes(), "w").messages
    assert adv.withdrawn == datetime(2018, 10, 11, 17, 29, 49, tzinfo=UTC)
    result = parse_osv((OSV / "GHSA-9v2f-6vcg-3hgv.json").read_bytes(), "g.json")
    assert result.report["versions_invalid"] == 1
    [warning] = result.errors
    assert (warning.level, warning.field) == ("warning", "affected[0].versions[1]")


def _record(**over: object) -> bytes:
    base: dict[str, object] = {
        "id": "GHSA-aaaa-bbbb-cccc",
        "modified": "2024-01-01T00:00:00Z",
        "affected": [
            {
                "package": {"ecosystem": "npm", "name": "x"},
                "ranges": [{"type": "SEMVER", "events": [{"introduced": "0"}, {"fixed": "1.0.0"}]}],
            }
        ],
    }
    base.update(over)
    return orjson.dumps(base)


def test_kev_flags() -> None:
    assert parse_osv(_record(database_specific={"kev": True}), "k").messages[0].kev
    assert parse_osv(_record(database_specific={"cisa_known_exploited": "2024-01-02"}), "k").messages[0].kev
    assert parse_osv(_record(aliases=["CVE-1"]), "k", kev_ids=frozenset({"CVE-1"})).messages[0].kev
    assert not parse_osv(_record(), "k").messages[0].kev


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"id": ""}, "id"),
        ({"modified": "yesterday"}, "modified"),
        ({"affected": [{"package": {"ecosystem": "npm"}}]}, "affected[0].package.name"),
        (
            {
                "affected": [
                    {"package": {"ecosystem": "npm", "name": "x"}, "ranges": [{"type": "FOO", "events": []}]}
                ]
            },
            "affected[0].ranges[0].type",
        ),
        (
            {
                "affected": [
                    {
                        "package": {"ecosystem": "npm", "name": "x"},
                        "ranges": [
                            {
                                "type": "SEMVER",
                                "events": [{"introduced": "0"}, {"fixed": "2"}, {"last_affected": "1"}],
                            }
                        ],
                    }
                ]
            },
            "affected[0].ranges[0].events",
        ),
        (
            {
                "affected": [
                    {
                        "package": {"ecosystem": "npm", "name": "x"},
                        "ranges": [{"type": "SEMVER", "events": [{"introduced": 1.5}]}],
                    }
                ]
            },
            "affected[0].ranges[0].events[0].introduced",
        ),
    ],
)
def test_structural_faults_refuse_the_record(over: dict[str, object], field: str) -> None:
    result = parse_osv(_record(**over), "r.json")
    assert result.messages == []
    assert field in {e.field for e in result.errors if e.level == "error"}


def test_unknown_ecosystem_is_skipped_with_warning() -> None:
    data = _record(affected=[{"package": {"ecosystem": "Linux", "name": "kernel"}}])
    result = parse_osv(data, "r.json")
    assert result.messages[0].affected == []
    assert result.report["packages_unkeyed"] == 1
    assert result.errors[0].level == "warning"


def test_batch_shapes() -> None:
    one = orjson.loads(_record())
    assert parse_osv(orjson.dumps([one, one]), "l").report["advisories"] == 2
    result = parse_osv(orjson.dumps({"vulns": [one, {"id": "x"}]}), "v")
    assert result.report == {"records": 2, "records_rejected": 1, "advisories": 1, "affected_packages": 1}
    assert {e.field for e in result.errors if e.level == "error"} == {"vulns[1].modified"}


@pytest.mark.parametrize(
    ("vector", "tenths", "label"),
    [
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", 98, "critical"),
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H", 75, "high"),
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:L", 53, "medium"),
        ("CVSS:3.1/AV:N/AC:H/PR:N/UI:N/S:U/C:N/I:N/A:L", 37, "low"),
        ("CVSS:3.1/AV:A/AC:H/PR:N/UI:N/S:C/C:H/I:N/A:N/", 61, "medium"),
        ("CVSS:3.1/AV:N/AC:L/PR:L/UI:N/S:C/C:H/I:H/A:H", 99, "critical"),
        ("CVSS:3.0/AV:L/AC:L/PR:H/UI:R/S:U/C:N/I:N/A:N", 0, "none"),
    ],
)
def test_cvss3_base_score(vector: str, tenths: int, label: str) -> None:
    assert base_score_tenths(vector) == tenths
    assert rating(tenths) == label


@pytest.mark.parametrize(
    "bad", ["", "CVSS:2.0/AV:N", "CVSS:3.1/AV:N/AC:L", "CVSS:3.1/AV:X/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"]
)
def test_cvss3_rejects(bad: str) -> None:
    assert base_score_tenths(bad) is None


def test_severity_from_cvss_when_no_label() -> None:
    data = _record(severity=[{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}])
    [adv] = parse_osv(data, "s").messages
    assert (adv.severity, adv.cvss) == ("critical", "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H")
