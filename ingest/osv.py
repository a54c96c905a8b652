"""OSV records (JSON, or PyPA-style YAML) → AdvisoryDelta.

A record with a structural fault (no id, no modified, an affected entry without a package, a range
without an ``introduced`` event, ``fixed`` together with ``last_affected``) is refused whole: a partial
advisory could tell the scheduler that a vulnerable version is safe. An affected package in an ecosystem
that has no purl type is skipped with a warning, because nothing in an inventory could match it anyway.

Severity: ``database_specific.severity`` (GHSA labels, MODERATE → medium), else the highest per-package
``ecosystem_specific``/``database_specific`` severity, else a CVSS 3.x base score computed from the vector,
else an ``Ubuntu`` severity label, else "critical" for ``MAL-`` (malicious package) records, else
"unknown". ``cvss`` keeps the vector text (v3, else v4, else v2).

KEV: ``database_specific`` keys ``kev``, ``cisa_kev``, ``cisa_known_exploited``, ``known_exploited`` or
``knownExploited`` when true / a date / an object; or the id or an alias in the caller's ``kev_ids``.
Registry existence of a package (the OSV linter's network check) is out of scope for a pure adapter.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal, cast

from packaging.version import InvalidVersion, Version
from pydantic import ValidationError

from ingest.cvss import base_score_tenths, rating
from ingest.document import as_dict, as_list, load_json_or_yaml, scalar_text, text, timestamp, truthy
from ingest.result import IngestError, IngestResult, count
from schemas.messages import AdvisoryDelta, AffectedPackage, AffectedRange, RangeEvent, Severity
from schemas.purl import Purl, normalise, package_key_for

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:+\-]*$")
# Home-database prefixes from the OSV schema (validation/schema.json $defs.prefix).
_KNOWN_PREFIX_RE = re.compile(
    r"^(x_|(ASB-A|PUB-A|ALPINE|ALSA|ALBA|ALEA|AZL|BELL|BIT|CGA|CLEANSTART|CLSA|CURL|CVE|DEBIAN|DHI|DRUPAL|DSA"
    r"|DLA|ELA|DTSA|ECHO|EEF|FreeBSD|GHSA|GO|GSD|HSEC|JLSEC|KUBE|LBSEC|LSN|MAL|MINI|MGASA|OESA|OSEC|OSV"
    r"|openSUSE-SU|PHSA|PSF|PYSEC|RHBA|RHEA|RHSA|RLSA|RXSA|RSEC|ROOT|RUSTSEC|SUSE-[SRFO]U|UBUNTU|USN|V8)-)"
)
_LABELS: dict[str, Severity] = {
    "CRITICAL": "critical",
    "HIGH": "high",
    "IMPORTANT": "high",
    "MODERATE": "medium",
    "MEDIUM": "medium",
    "LOW": "low",
    "NEGLIGIBLE": "low",
    "NONE": "none",
}
_RANK = {"unknown": 0, "none": 1, "low": 2, "medium": 3, "high": 4, "critical": 5}
_KEV_KEYS = ("kev", "cisa_kev", "cisa_known_exploited", "known_exploited", "knownExploited")
_EVENT_KEYS = ("introduced", "fixed", "last_affected", "limit")


def parse_osv(
    data: bytes, source: str, *, kev_ids: frozenset[str] = frozenset()
) -> IngestResult[AdvisoryDelta]:
    """One OSV record, a JSON list of records, or ``{"vulns": [...]}`` (the OSV API's batch shape)."""
    doc = load_json_or_yaml(data, source)
    if isinstance(doc, IngestError):
        return IngestResult(errors=[doc], report={"records": 0, "records_rejected": 1}, format="osv")
    if isinstance(doc, dict) and isinstance(doc.get("vulns"), list):
        records: list[tuple[str, Any]] = [(f"vulns[{i}]", r) for i, r in enumerate(doc["vulns"])]
    elif isinstance(doc, list):
        records = [(f"[{i}]", r) for i, r in enumerate(doc)]
    else:
        records = [("", doc)]
    messages: list[AdvisoryDelta] = []
    errors: list[IngestError] = []
    report: dict[str, int] = {"records": len(records), "records_rejected": 0}
    for prefix, record in records:
        advisory = _record(record, source, prefix, kev_ids, errors, report)
        if advisory is None:
            count(report, "records_rejected")
        else:
            messages.append(advisory)
            count(report, "advisories")
            if advisory.withdrawn is not None:
                count(report, "withdrawn")
            if advisory.kev:
                count(report, "kev")
    return IngestResult(messages=messages, errors=errors, report=report, format="osv")


def _path(prefix: str, tail: str) -> str:
    if not prefix:
        return tail or "$"
    return f"{prefix}.{tail}" if tail and not tail.startswith("[") else prefix + tail


def _record(
    record: Any,
    source: str,
    prefix: str,
    kev_ids: frozenset[str],
    errors: list[IngestError],
    report: dict[str, int],
) -> AdvisoryDelta | None:
    def err(field: str, message: str, level: Literal["error", "warning"] = "error") -> None:
        errors.append(IngestError(source, _path(prefix, field), message, level))

    if not isinstance(record, dict):
        err("", f"an OSV record is a JSON object, got {type(record).__name__}")
        return None
    before = sum(e.level == "error" for e in errors)
    adv_id = text(record.get("id"))
    if adv_id is None:
        err("id", "required: a non-empty string")
    elif not _ID_RE.match(adv_id):
        err("id", f"{adv_id!r} is not a valid OSV id")
    elif not _KNOWN_PREFIX_RE.match(adv_id):
        err("id", f"{adv_id!r} has no known home-database prefix", "warning")
    modified = _time(record, "modified", err, required=True)
    published = _time(record, "published", err)
    withdrawn = _time(record, "withdrawn", err)
    aliases = _strings(record.get("aliases"), "aliases", err)
    affected = _affected(record.get("affected"), err, report)
    db = as_dict(record.get("database_specific")) or {}
    severity, cvss = _severity(record, db, affected[1])
    if sum(e.level == "error" for e in errors) > before or adv_id is None or modified is None:
        return None
    kev = any(truthy(db.get(k)) for k in _KEV_KEYS) or bool(kev_ids & {adv_id, *aliases})
    summary = text(record.get("summary")) or (text(record.get("details")) or "").strip().split("\n")[0][:200]
    try:
        return AdvisoryDelta.model_validate(
            {
                "id": adv_id,
                "aliases": sorted(set(aliases) - {adv_id}),
                "modified": modified,
                "published": published,
                "withdrawn": withdrawn,
                "summary": summary.strip(),
                "severity": severity,
                "cvss": cvss,
                "kev": kev,
                "affected": affected[0],
            }
        )
    except ValidationError as exc:
        err("", f"does not fit the advisory contract: {exc.errors()[0]['msg']}")
        return None


def _time(record: dict[str, Any], key: str, err: Any, *, required: bool = False) -> datetime | None:
    raw = record.get(key)
    if raw is None:
        if required:
            err(key, "required: an RFC 3339 timestamp")
        return None
    value = timestamp(raw)
    if value is None:
        err(key, f"not an RFC 3339 timestamp: {raw!r}")
    return value


def _strings(raw: Any, field: str, err: Any) -> list[str]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        err(field, "expected a list of strings")
        return []
    out = []
    for i, item in enumerate(raw):
        value = scalar_text(item)
        if value is None:
            err(f"{field}[{i}]", f"expected a non-empty string, got {item!r}")
        else:
            out.append(value)
    return out


def _affected(
    raw: Any, err: Any, report: dict[str, int]
) -> tuple[list[AffectedPackage], list[dict[str, Any]]]:
    if raw is None:
        return [], []
    if not isinstance(raw, list):
        err("affected", "expected a list")
        return [], []
    merged: dict[tuple[str, str, str], tuple[list[AffectedRange], set[str]]] = {}
    entries: list[dict[str, Any]] = []
    for i, entry in enumerate(raw):
        at = f"affected[{i}]"
        if not isinstance(entry, dict):
            err(at, "expected an object")
            continue
        entries.append(entry)
        package = as_dict(entry.get("package"))
        if package is None:
            err(f"{at}.package", "required: {ecosystem, name} (nothing could be matched against this entry)")
        ranges = _ranges(entry.get("ranges"), at, err)
        if package is None:
            continue
        ecosystem, name = text(package.get("ecosystem")), text(package.get("name"))
        if ecosystem is None:
            err(f"{at}.package.ecosystem", "required: a non-empty string")
        if name is None:
            err(f"{at}.package.name", "required: a non-empty string")
        if ecosystem is None or name is None:
            continue
        versions = _strings(entry.get("versions"), f"{at}.versions", err)
        _check_versions(ecosystem, versions, f"{at}.versions", err, report)
        key = _package_key(ecosystem, name, package.get("purl"), at, err)
        if key is None:
            count(report, "packages_unkeyed")
            continue
        slot = merged.setdefault((key, ecosystem, name), ([], set()))
        slot[0].extend(ranges)
        slot[1].update(versions)
    packages = [
        AffectedPackage(package=k, ecosystem=e, name=n, ranges=r, versions=sorted(v))
        for (k, e, n), (r, v) in sorted(merged.items())
    ]
    count(report, "affected_packages", len(packages))
    return packages, entries


def _package_key(ecosystem: str, name: str, purl: Any, at: str, err: Any) -> str | None:
    key = package_key_for(ecosystem, name)
    if key is not None:
        return key
    parsed = normalise(purl) if isinstance(purl, str) else None
    if isinstance(parsed, Purl):
        return parsed.package_key
    err(f"{at}.package.ecosystem", f"no purl type for ecosystem {ecosystem!r} and no usable purl", "warning")
    return None


def _check_versions(
    ecosystem: str, versions: list[str], field: str, err: Any, report: dict[str, int]
) -> None:
    """PyPI versions that PEP 440 cannot parse can never match an installed version: keep, but say so."""
    if ecosystem.split(":")[0] != "PyPI":
        return
    for i, version in enumerate(versions):
        try:
            Version(version)
        except InvalidVersion:
            count(report, "versions_invalid")
            err(f"{field}[{i}]", f"{version!r} is not a valid PEP 440 version", "warning")


def _ranges(raw: Any, at: str, err: Any) -> list[AffectedRange]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        err(f"{at}.ranges", "expected a list")
        return []
    out: list[AffectedRange] = []
    for j, rng in enumerate(raw):
        rat = f"{at}.ranges[{j}]"
        if not isinstance(rng, dict):
            err(rat, "expected an object")
            continue
        rtype = rng.get("type")
        if rtype not in ("ECOSYSTEM", "SEMVER", "GIT"):
            err(f"{rat}.type", f"must be ECOSYSTEM, SEMVER or GIT, got {rtype!r}")
            continue
        events = _events(rng.get("events"), rat, err)
        if events is None:
            continue
        repo = text(rng.get("repo"))
        if rtype == "GIT" and repo is None:
            err(f"{rat}.repo", "GIT ranges name their repository", "warning")
        out.append(AffectedRange(type=rtype, events=events, repo=repo))
    return out


def _events(raw: Any, rat: str, err: Any) -> list[RangeEvent] | None:
    if not isinstance(raw, list) or not raw:
        err(f"{rat}.events", "required: a non-empty list of events")
        return None
    events: list[RangeEvent] = []
    ok = True
    for k, event in enumerate(raw):
        eat = f"{rat}.events[{k}]"
        keys = [key for key in _EVENT_KEYS if isinstance(event, dict) and key in event]
        if not isinstance(event, dict) or len(keys) != 1 or len(event) != 1:
            err(eat, "an event has exactly one of introduced, fixed, last_affected, limit")
            ok = False
            continue
        value = scalar_text(event[keys[0]])
        if value is None:
            err(f"{eat}.{keys[0]}", f"expected a version string, got {event[keys[0]]!r}")
            ok = False
            continue
        events.append(RangeEvent.model_validate({keys[0]: value}))
    kinds = {key for e in events for key in _EVENT_KEYS if getattr(e, key) is not None}
    if ok and "introduced" not in kinds:
        err(f"{rat}.events", "no 'introduced' event: every range must say where it starts")
        ok = False
    if "fixed" in kinds and "last_affected" in kinds:
        err(f"{rat}.events", "'fixed' and 'last_affected' are mutually exclusive in one range")
        ok = False
    return events if ok else None


def _severity(
    record: dict[str, Any], db: dict[str, Any], entries: list[dict[str, Any]]
) -> tuple[Severity, str | None]:
    vectors = {
        str(s.get("type")): s.get("score")
        for s in as_list(record.get("severity"))
        if isinstance(s, dict) and isinstance(s.get("score"), str)
    }
    cvss = cast(str | None, vectors.get("CVSS_V3") or vectors.get("CVSS_V4") or vectors.get("CVSS_V2"))
    label = _LABELS.get(str(db.get("severity", "")).strip().upper())
    if label is not None:
        return label, cvss
    per_package: list[Severity] = []
    for entry in entries:
        for holder in ("ecosystem_specific", "database_specific"):
            found = _LABELS.get(str((as_dict(entry.get(holder)) or {}).get("severity", "")).strip().upper())
            if found is not None:
                per_package.append(found)
    if per_package:
        return max(per_package, key=lambda s: _RANK[s]), cvss
    v3 = vectors.get("CVSS_V3")
    tenths = base_score_tenths(v3) if isinstance(v3, str) else None
    if tenths is not None:
        return cast(Severity, rating(tenths)), cvss
    ubuntu = _LABELS.get(str(vectors.get("Ubuntu", "")).strip().upper())
    if ubuntu is not None:
        return ubuntu, cvss
    # A MAL- record is a malicious package: any install is a compromise, whatever the (absent) score.
    return ("critical" if str(record.get("id", "")).startswith("MAL-") else "unknown"), cvss
