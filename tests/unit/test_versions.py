"""OSV range semantics per ecosystem, the vers-spec containment suites, and properties of the walk."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.messages import AffectedPackage, AffectedRange, RangeEvent
from streams.versions import affected_versions_match, match_affected, parse_version, scheme_for
from tests.conftest import sample_data


def _affected(
    ecosystem: str,
    package: str,
    *events: dict[str, str],
    versions: list[str] | None = None,
    kind: str = "ECOSYSTEM",
) -> AffectedPackage:
    return AffectedPackage.model_validate(
        {
            "package": package,
            "ecosystem": ecosystem,
            "name": package.rsplit("/", 1)[-1],
            "ranges": [{"type": kind, "events": list(events)}] if events else [],
            "versions": versions or [],
        }
    )


# (ecosystem, package, events, version, expected)
BOUNDARIES = [
    # npm: introduced inclusive, fixed exclusive, last_affected inclusive, prereleases sort before release
    ("npm", "npm/ws", [{"introduced": "6.0.0"}, {"fixed": "6.2.2"}], "6.0.0", True),
    ("npm", "npm/ws", [{"introduced": "6.0.0"}, {"fixed": "6.2.2"}], "5.9.9", False),
    ("npm", "npm/ws", [{"introduced": "6.0.0"}, {"fixed": "6.2.2"}], "6.2.1", True),
    ("npm", "npm/ws", [{"introduced": "6.0.0"}, {"fixed": "6.2.2"}], "6.2.2", False),
    ("npm", "npm/ws", [{"introduced": "6.0.0"}, {"fixed": "6.2.2"}], "6.2.2-rc.1", True),
    ("npm", "npm/ws", [{"introduced": "0"}, {"last_affected": "6.2.2"}], "6.2.2", True),
    ("npm", "npm/ws", [{"introduced": "0"}, {"last_affected": "6.2.2"}], "6.2.3", False),
    ("npm", "npm/ws", [{"introduced": "0"}], "0.0.0-alpha", True),
    # PyPI (PEP 440): 1.0 == 1.0.0, rc < final, post > final
    ("PyPI", "pypi/django", [{"introduced": "1.0"}, {"fixed": "2.2.10"}], "1.0.0", True),
    ("PyPI", "pypi/django", [{"introduced": "1.0"}, {"fixed": "2.2.10"}], "2.2.10rc1", True),
    ("PyPI", "pypi/django", [{"introduced": "1.0"}, {"fixed": "2.2.10"}], "2.2.10", False),
    ("PyPI", "pypi/django", [{"introduced": "1.0"}, {"fixed": "2.2.10"}], "0.99", False),
    ("PyPI", "pypi/django", [{"introduced": "0"}, {"last_affected": "2.2.9"}], "2.2.9.post1", False),
    ("PyPI", "pypi/django", [{"introduced": "0"}, {"last_affected": "2.2.9"}], "2.2.9", True),
    # Maven: qualifiers order before the release
    ("Maven", "maven/org.x/y", [{"introduced": "2.0"}, {"fixed": "2.13.3"}], "2.13.3-SNAPSHOT", True),
    ("Maven", "maven/org.x/y", [{"introduced": "2.0"}, {"fixed": "2.13.3"}], "2.13.3", False),
    ("Maven", "maven/org.x/y", [{"introduced": "2.0"}, {"fixed": "2.13.3"}], "2.0", True),
    ("Maven", "maven/org.x/y", [{"introduced": "2.0"}, {"fixed": "2.13.3"}], "2.0-alpha-1", False),
    # Debian: epochs and tildes
    (
        "Debian:12",
        "deb/debian/openssl",
        [{"introduced": "0"}, {"fixed": "3.0.11-1~deb12u1"}],
        "3.0.11-1",
        False,
    ),
    (
        "Debian:12",
        "deb/debian/openssl",
        [{"introduced": "0"}, {"fixed": "3.0.11-1~deb12u1"}],
        "3.0.10-1",
        True,
    ),
    ("Debian:12", "deb/debian/openssl", [{"introduced": "0"}, {"fixed": "1:1.0-1"}], "9.9-1", True),
    ("Debian:12", "deb/debian/openssl", [{"introduced": "1.0-1"}, {"fixed": "1.0-2"}], "1.0-1", True),
    # Alpine: -rN revisions
    ("Alpine:v3.18", "apk/alpine/busybox", [{"introduced": "0"}, {"fixed": "1.36.1-r2"}], "1.36.1-r1", True),
    ("Alpine:v3.18", "apk/alpine/busybox", [{"introduced": "0"}, {"fixed": "1.36.1-r2"}], "1.36.1-r2", False),
    (
        "Alpine:v3.18",
        "apk/alpine/busybox",
        [{"introduced": "0"}, {"fixed": "1.36.1-r2"}],
        "1.36.1-r10",
        False,
    ),
    # Go, crates.io, RubyGems, NuGet, Packagist, Red Hat, Hex
    ("Go", "golang/golang.org/x/net", [{"introduced": "0"}, {"fixed": "0.17.0"}], "v0.16.0", True),
    ("Go", "golang/golang.org/x/net", [{"introduced": "0"}, {"fixed": "0.17.0"}], "v0.17.0", False),
    ("crates.io", "cargo/tokio", [{"introduced": "1.0.0"}, {"fixed": "1.18.5"}], "1.18.4", True),
    ("RubyGems", "gem/rails", [{"introduced": "7.0.0"}, {"fixed": "7.0.4.1"}], "7.0.4", True),
    ("RubyGems", "gem/rails", [{"introduced": "7.0.0"}, {"fixed": "7.0.4.1"}], "7.0.4.1", False),
    ("NuGet", "nuget/newtonsoft.json", [{"introduced": "0"}, {"fixed": "13.0.1"}], "12.0.3", True),
    (
        "Packagist",
        "composer/symfony/http-kernel",
        [{"introduced": "5.0.0"}, {"fixed": "5.4.20"}],
        "5.4.19",
        True,
    ),
    (
        "Red Hat",
        "rpm/redhat/openssl",
        [{"introduced": "0"}, {"fixed": "1:3.0.7-24.el9"}],
        "1:3.0.7-18.el9",
        True,
    ),
    (
        "Red Hat",
        "rpm/redhat/openssl",
        [{"introduced": "0"}, {"fixed": "1:3.0.7-24.el9"}],
        "1:3.0.7-24.el9",
        False,
    ),
    ("Hex", "hex/plug", [{"introduced": "1.0.0"}, {"fixed": "1.3.5"}], "1.3.4", True),
]


@pytest.mark.parametrize(("ecosystem", "package", "events", "version", "expected"), BOUNDARIES)
def test_range_boundaries(
    ecosystem: str, package: str, events: list[dict[str, str]], version: str, expected: bool
) -> None:
    affected = _affected(ecosystem, package, *events)
    result = match_affected(affected, version)
    assert result.affected is expected, result.reason


def test_several_intervals_in_one_range_are_walked_in_version_order() -> None:
    # Events listed out of order, as in osv-schema's multiple_ranges_in_package testdata.
    events = [{"introduced": "0"}, {"introduced": "4.0.1"}, {"fixed": "4.0.5"}, {"fixed": "3.0.21"}]
    affected = _affected("RubyGems", "gem/passenger", *events)
    assert affected_versions_match(affected, "3.0.20")
    assert not affected_versions_match(affected, "3.0.21")
    assert not affected_versions_match(affected, "4.0.0")
    assert affected_versions_match(affected, "4.0.1")
    assert not affected_versions_match(affected, "4.0.5")


def test_explicit_versions_list() -> None:
    affected = _affected("PyPI", "pypi/x", versions=["1.0", "1.1"])
    assert affected_versions_match(affected, "1.0")
    assert affected_versions_match(affected, "1.0.0")  # equal once parsed
    assert not affected_versions_match(affected, "1.2")


def test_limit_caps_the_range() -> None:
    affected = _affected("npm", "npm/x", {"introduced": "1.0.0"}, {"limit": "2.0.0"})
    assert affected_versions_match(affected, "1.5.0")
    assert not affected_versions_match(affected, "2.0.0")


def test_git_ranges_are_ignored_and_say_so() -> None:
    affected = _affected("npm", "npm/x", {"introduced": "abc123"}, {"fixed": "def456"}, kind="GIT")
    result = match_affected(affected, "1.0.0")
    assert not result.affected
    assert "GIT" in result.reason


def test_semver_range_with_v_prefixed_go_versions() -> None:
    affected = _affected(
        "Go", "golang/github.com/a/b", {"introduced": "0"}, {"fixed": "1.2.3"}, kind="SEMVER"
    )
    assert affected_versions_match(affected, "v1.2.2")
    assert not affected_versions_match(affected, "v1.2.3")


@pytest.mark.parametrize("version", ["not a version!", "###", ""])
def test_unparseable_versions_are_not_affected_but_reported(version: str) -> None:
    affected = _affected("npm", "npm/x", {"introduced": "0"})
    result = match_affected(affected, version)
    assert not result.affected
    assert result.status == "unknown"
    assert result.reason


def test_unparseable_bound_is_unknown_not_an_exception() -> None:
    affected = _affected("npm", "npm/x", {"introduced": "0"}, {"fixed": "garbage!!"})
    result = match_affected(affected, "1.0.0")
    assert result.status == "unknown"


def test_unknown_ecosystem() -> None:
    affected = _affected("NoSuchEcosystem", "weird/x", {"introduced": "0"}, {"fixed": "1"})
    assert match_affected(affected, "0.5").status == "unknown"


# ---------------------------------------------------------------- vers-spec containment suites

_VERS_SCHEME = {"npm": ("npm", "npm/x"), "pypi": ("PyPI", "pypi/x")}


def _vers_cases() -> list[Any]:
    cases = []
    for path in sorted((sample_data() / "vers").glob("*.json")):
        for case in json.loads(path.read_text())["tests"]:
            if case["test_type"] == "containment":
                cases.append(
                    pytest.param(case, id=f"{path.stem}:{case['input']['vers']}:{case['input']['version']}")
                )
    return cases


def _vers_contains(vers: str, version: str) -> bool:
    """Evaluate a vers range with the same scheme comparison the OSV walk uses."""
    scheme_name, _, constraints = vers.removeprefix("vers:").partition("/")
    ecosystem, package = _VERS_SCHEME[scheme_name]
    scheme = scheme_for(ecosystem, package)
    assert scheme is not None
    if constraints == "*":
        return True
    target = parse_version(scheme, version)
    comparators: list[tuple[str, Any]] = []
    for part in constraints.split("|"):
        for op in (">=", "<=", "!=", ">", "<"):
            if part.startswith(op):
                comparators.append((op, parse_version(scheme, part[len(op) :])))
                break
        else:
            comparators.append(("=", parse_version(scheme, part)))
    if any(op == "!=" and target == v for op, v in comparators):
        return False
    if any(op == "=" and target == v for op, v in comparators):
        return True
    # vers semantics: sorted constraints form intervals; a version is in if it lies in one of them.
    ranged = sorted([(v, op) for op, v in comparators if op in (">", ">=", "<", "<=")], key=lambda x: x[0])
    lower: tuple[Any, str] | None = None
    for value, op in ranged:
        if op in (">", ">="):
            lower = (value, op)
            continue
        lower_ok = lower is None or (target > lower[0] if lower[1] == ">" else target >= lower[0])
        upper_ok = target < value if op == "<" else target <= value
        if lower_ok and upper_ok:
            return True
        lower = None
    if lower is not None:
        return bool(target > lower[0] if lower[1] == ">" else target >= lower[0])
    return False


@pytest.mark.parametrize("case", _vers_cases())
def test_vers_containment_suite(case: dict[str, Any]) -> None:
    assert _vers_contains(case["input"]["vers"], case["input"]["version"]) is case["expected_output"]


# ---------------------------------------------------------------- properties

semver = st.tuples(st.integers(0, 20), st.integers(0, 20), st.integers(0, 20)).map(
    lambda t: "{}.{}.{}".format(*t)
)


def _key(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split("."))


@given(lo=semver, hi=semver, probe=semver)
def test_introduced_fixed_is_a_half_open_interval(lo: str, hi: str, probe: str) -> None:
    lo, hi = sorted((lo, hi), key=_key)
    affected = _affected("npm", "npm/x", {"introduced": lo}, {"fixed": hi})
    expected = _key(lo) <= _key(probe) < _key(hi)
    assert affected_versions_match(affected, probe) is expected


@given(lo=semver, hi=semver, probe=semver)
def test_introduced_last_affected_is_a_closed_interval(lo: str, hi: str, probe: str) -> None:
    lo, hi = sorted((lo, hi), key=_key)
    affected = _affected("PyPI", "pypi/x", {"introduced": lo}, {"last_affected": hi})
    expected = _key(lo) <= _key(probe) <= _key(hi)
    assert affected_versions_match(affected, probe) is expected


@given(bounds=st.lists(semver, min_size=2, max_size=8, unique=True), probe=semver, data=st.data())
def test_event_order_in_the_record_does_not_matter(
    bounds: list[str], probe: str, data: st.DataObject
) -> None:
    ordered = sorted(bounds, key=_key)
    events = [{"introduced" if i % 2 == 0 else "fixed": v} for i, v in enumerate(ordered)]
    shuffled = data.draw(st.permutations(events))
    a = _affected("npm", "npm/x", *events)
    b = _affected("npm", "npm/x", *shuffled)
    assert affected_versions_match(a, probe) is affected_versions_match(b, probe)


@given(st.text(max_size=12))
def test_never_raises(version: str) -> None:
    affected = _affected("Maven", "maven/a/b", {"introduced": "0"}, {"fixed": "2.0"})
    match_affected(affected, version)


def test_range_event_model_is_what_we_read() -> None:
    # Guard: the walk reads exactly these four event kinds.
    assert set(RangeEvent.model_fields) == {"introduced", "fixed", "last_affected", "limit"}
    assert AffectedRange.model_fields["type"].annotation is not None
