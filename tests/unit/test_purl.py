"""The purl-spec test suite (tests/spec + tests/types) run against schemas.purl, plus our own rules."""

from __future__ import annotations

import json
from typing import Any

import pytest

from schemas.purl import Purl, PurlError, build, normalise, package_key_for, purl_type_for_ecosystem
from tests.conftest import sample_data

# The suite contradicts itself on one case: this 'required' parse test expects uppercase qualifier keys
# to fail, while maven's 'required' parse test (repositorY_url) and rpm's own 'recommended' validate test
# expect them to be lowercased. We follow the lenient reading; the case is counted as a known deviation.
KNOWN_DEVIATIONS = {
    ("rpm-test.json", "parse", "pkg:Rpm/fedora/curl@7.50.3-1.fc25?Arch=i386&Distro=fedora-25")
}


def _cases() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted((sample_data() / "purl").glob("*-test.json")):
        for case in json.loads(path.read_text())["tests"]:
            out.append((path.name, case))
    return out


CASES = _cases()


def _run(case: dict[str, Any]) -> Purl | PurlError | str:
    kind = case["test_type"]
    data = case["input"]
    if kind == "build":
        return build(
            data["type"],
            data["namespace"],
            data["name"],
            data["version"],
            data["qualifiers"],
            data["subpath"],
        )
    return normalise(data)


def _passes(case: dict[str, Any]) -> bool:
    result = _run(case)
    if case.get("expected_failure"):
        return isinstance(result, PurlError)
    if not isinstance(result, Purl):
        return False
    expected: Any = case["expected_output"]
    if case["test_type"] in ("build", "validate"):
        return bool(result.canonical == expected)
    return bool(
        {
            "type": result.type,
            "namespace": result.namespace,
            "name": result.name,
            "version": result.version,
            "qualifiers": dict(result.qualifiers) or None,
            "subpath": result.subpath,
        }
        == expected
    )


@pytest.mark.parametrize(("file", "case"), CASES, ids=[f"{f}:{i}" for i, (f, _) in enumerate(CASES)])
def test_purl_spec_case(file: str, case: dict[str, Any]) -> None:
    if (file, case["test_type"], json.dumps(case["input"]).strip('"')) in KNOWN_DEVIATIONS:
        # The suite contradicts itself here (see KNOWN_DEVIATIONS); we pin the lenient reading we chose.
        assert not _passes(case), "a known deviation now passes: drop it from KNOWN_DEVIATIONS"
        assert isinstance(normalise(case["input"]), Purl), _run(case)
        return
    assert _passes(case), (case, _run(case))


def test_purl_spec_pass_count(capsys: pytest.CaptureFixture[str]) -> None:
    passed = sum(_passes(c) for _, c in CASES)
    with capsys.disabled():
        print(
            f"\npurl-spec suite: {passed}/{len(CASES)} cases pass ({len(KNOWN_DEVIATIONS)} known deviation)"
        )
    assert len(CASES) == 153
    assert passed == len(CASES) - len(KNOWN_DEVIATIONS)


@pytest.mark.parametrize(
    ("purl", "canonical", "key"),
    [
        (
            "pkg:alpine/musl@1.2.3-r0?arch=x86_64",
            "pkg:apk/alpine/musl@1.2.3-r0?arch=x86_64",
            "apk/alpine/musl",
        ),
        ("pkg:apk/Alpine/MUSL@1.2.3-r0", "pkg:apk/alpine/musl@1.2.3-r0", "apk/alpine/musl"),
        ("pkg:oci/alpine@sha256%3AABCD", "pkg:oci/alpine@sha256:abcd", "oci/alpine"),
        ("pkg:oci/alpine@sha256:abcd", "pkg:oci/alpine@sha256:abcd", "oci/alpine"),
        ("pkg:pypi/Products.Plug_Auth@1", "pkg:pypi/products.plug-auth@1", "pypi/products-plug-auth"),
        (
            "pkg:golang/github.com/BurntSushi/toml@v1",
            "pkg:golang/github.com/burntsushi/toml@v1",
            "golang/github.com/burntsushi/toml",
        ),
        ("pkg:deb/Debian/Curl@7", "pkg:deb/debian/curl@7", "deb/debian/curl"),
        ("pkg:npm/%40Angular/Core@1", "pkg:npm/%40angular/core@1", "npm/@angular/core"),
        ("pkg:maven/org.Apache/Foo@1#a/./../b", "pkg:maven/org.Apache/Foo@1#a/b", "maven/org.Apache/Foo"),
        (
            "pkg:github/Package-URL/Purl-Spec@v1",
            "pkg:github/package-url/purl-spec@v1",
            "github/package-url/purl-spec",
        ),
    ],
)
def test_normalise_type_rules(purl: str, canonical: str, key: str) -> None:
    result = normalise(purl)
    assert isinstance(result, Purl), result
    assert result.canonical == canonical
    assert result.package_key == key


def test_oci_image_digest() -> None:
    p = normalise("pkg:oci/git@sha256%3A23a264e6?repository_url=ghcr.io/x")
    assert isinstance(p, Purl)
    assert p.image_digest == "sha256:23a264e6"
    q = normalise("pkg:oci/kube-apiserver?tag=v1")
    assert isinstance(q, Purl)
    assert q.image_digest is None


@pytest.mark.parametrize(
    "bad", ["", "nginx", "pkg:", "pkg:npm", "pkg:npm/", "pkg:npm/@1.0", "pkg:npm/a%ff", "http://x"]
)
def test_normalise_rejects(bad: str) -> None:
    result = normalise(bad)
    assert isinstance(result, PurlError)
    assert result.message


@pytest.mark.parametrize(
    ("ecosystem", "name", "key"),
    [
        ("npm", "@Angular/core", "npm/@angular/core"),
        ("npm", "minimist", "npm/minimist"),
        ("PyPI", "Products.PluggableAuthService", "pypi/products-pluggableauthservice"),
        ("PyPI", "Django_Allauth", "pypi/django-allauth"),
        ("Maven", "org.apache.logging.log4j:log4j-core", "maven/org.apache.logging.log4j/log4j-core"),
        ("Go", "github.com/BurntSushi/toml", "golang/github.com/burntsushi/toml"),
        ("Go", "stdlib", "golang/stdlib"),
        ("crates.io", "tokio", "cargo/tokio"),
        ("RubyGems", "activesupport", "gem/activesupport"),
        ("NuGet", "Newtonsoft.Json", "nuget/Newtonsoft.Json"),
        ("Packagist", "Symfony/http-kernel", "composer/symfony/http-kernel"),
        ("Debian:11", "openssl", "deb/debian/openssl"),
        ("Ubuntu:22.04:LTS", "openssl", "deb/ubuntu/openssl"),
        ("Alpine:v3.16", "musl", "apk/alpine/musl"),
        ("Red Hat:enterprise_linux:9", "openssl", "rpm/redhat/openssl"),
        ("Rocky Linux:8", "openssl", "rpm/rocky/openssl"),
        ("AlmaLinux:9", "openssl", "rpm/almalinux/openssl"),
        ("Hex", "Plug", "hex/plug"),
        ("Pub", "http", "pub/http"),
        ("GitHub Actions", "actions/Checkout", "github/actions/checkout"),
    ],
)
def test_package_key_for(ecosystem: str, name: str, key: str) -> None:
    assert package_key_for(ecosystem, name) == key


def test_package_key_for_unknown() -> None:
    assert package_key_for("Linux", "kernel") is None
    assert package_key_for("Maven", "no-colon") is None
    assert purl_type_for_ecosystem("Debian:12") == "deb"
    assert purl_type_for_ecosystem("OSS-Fuzz") is None


def test_sbom_and_osv_keys_meet() -> None:
    sbom = normalise("pkg:alpine/alpine-baselayout@3.2.0-r22?arch=x86_64&distro=alpine-3.16.2")
    assert isinstance(sbom, Purl)
    assert sbom.package_key == package_key_for("Alpine:v3.16", "alpine-baselayout")
