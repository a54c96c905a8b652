"""Explain traces: range event pairs for every range kind the resolver supports, VEX precedence, policy
rules, and the trace's path through the job result, the signed payload, the read model, the API and the CLI."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.executors import HttpExecutor, Ok, Permanent
from cli.explain import _lookup, pair_text, trace_lines
from cli.main import main
from controlplane.views import image_view
from projections.explain import finding_explain
from projections.fold import IMAGES, Position, apply_all, fold, image_id
from projections.store import MemoryStore
from schemas.canonical import dumps
from schemas.messages import (
    AdvisoryDelta,
    AffectedPackage,
    Component,
    ExecutorReport,
    FindingTrace,
    Inventory,
    JobCommand,
    JobInputs,
    JobResult,
    PolicyRules,
    Reason,
    VexStatement,
)
from signing.keys import SigningKey
from signing.statement import sign_completion, statement_bytes
from streams.evaluator import evaluate, evaluate_explained, policy_decision
from streams.findings import completed_result
from streams.versions import match_affected
from tests.conftest import sample_data

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DIGEST = "sha256:" + "ab" * 32


def affected(
    ecosystem: str,
    package: str,
    *events: dict[str, str],
    kind: str = "ECOSYSTEM",
    versions: list[str] | None = None,
    extra_ranges: list[dict[str, Any]] | None = None,
) -> AffectedPackage:
    ranges = [{"type": kind, "events": list(events)}] if events else []
    return AffectedPackage.model_validate(
        {
            "package": package,
            "ecosystem": ecosystem,
            "name": package.rsplit("/", 1)[-1],
            "ranges": [*(extra_ranges or []), *ranges],
            "versions": versions or [],
        }
    )


def image(*components: tuple[str, str], tenant: str = "t1", digest: str = DIGEST) -> Inventory:
    return Inventory(
        tenant=tenant,
        image_digest=digest,
        components=[Component(purl=f"pkg:{p}@{v}", package=p, version=v) for p, v in components],
        observed_at=T0,
    )


def advisory(vid: str, aff: AffectedPackage, **kw: Any) -> AdvisoryDelta:
    return AdvisoryDelta(id=vid, modified=kw.pop("modified", T0), affected=[aff], **kw)


def statement(
    vid: str, status: str, at: datetime = T0, sid: str = "s1", tenant: str | None = None, **product: Any
) -> VexStatement:
    return VexStatement.model_validate(
        {
            "document_id": f"doc-{sid}",
            "statement_id": sid,
            "vulnerability": vid,
            "products": [product or {"package": "npm/x"}],
            "status": status,
            "justification": "component_not_present" if status == "not_affected" else None,
            "timestamp": at,
            "tenant": tenant,
        }
    )


def only_trace(inv: Inventory, advisories: list[AdvisoryDelta], **kw: Any) -> FindingTrace:
    result = evaluate_explained(inv, advisories, kw.pop("vex", []), kw.pop("rules", PolicyRules()))
    assert len(result.traces) == 1, result.traces
    return result.traces[0]


# ---------------------------------------------------------------- range kinds


def test_ecosystem_range_names_the_interval_that_contains_the_version() -> None:
    # Two intervals, events written out of order: the pair is the second interval, not the first.
    aff = affected(
        "RubyGems",
        "gem/passenger",
        {"introduced": "0"},
        {"introduced": "4.0.1"},
        {"fixed": "4.0.5"},
        {"fixed": "3.0.21"},
    )
    trace = only_trace(image(("gem/passenger", "4.0.3")), [advisory("GHSA-1", aff, severity="high")])
    rng = trace.range
    assert (rng.kind, rng.introduced, rng.fixed, rng.last_affected, rng.limit) == (
        "ECOSYSTEM",
        "4.0.1",
        "4.0.5",
        None,
        None,
    )
    assert [e.model_dump(exclude_none=True) for e in rng.written] == [
        {"introduced": "0"},
        {"introduced": "4.0.1"},
        {"fixed": "4.0.5"},
        {"fixed": "3.0.21"},
    ]
    # normalised: walk order (introduced 0 first, then by version)
    assert [e.model_dump(exclude_none=True) for e in rng.normalised] == [
        {"introduced": "0"},
        {"fixed": "3.0.21"},
        {"introduced": "4.0.1"},
        {"fixed": "4.0.5"},
    ]
    assert rng.scheme == "RubygemsVersion"
    assert pair_text(rng.model_dump()) == "[introduced 4.0.1, fixed 4.0.5)"
    low = only_trace(image(("gem/passenger", "3.0.20")), [advisory("GHSA-1", aff)])
    assert (low.range.introduced, low.range.fixed) == ("0", "3.0.21")


def test_semver_range_bounds_are_normalised_by_the_scheme() -> None:
    aff = affected(
        "Go", "golang/github.com/a/b", {"introduced": "v1.0.0"}, {"fixed": "v1.2.3"}, kind="SEMVER"
    )
    trace = only_trace(image(("golang/github.com/a/b", "v1.2.2")), [advisory("GO-1", aff)])
    assert trace.range.kind == "SEMVER"
    assert (trace.range.introduced, trace.range.fixed) == ("v1.0.0", "v1.2.3")  # as written
    assert [e.model_dump(exclude_none=True) for e in trace.range.normalised] == [
        {"introduced": "1.0.0"},
        {"fixed": "1.2.3"},
    ]


def test_git_ranges_are_refused_with_a_reason() -> None:
    git = {
        "type": "GIT",
        "repo": "https://example.org/x.git",
        "events": [{"introduced": "abc"}, {"fixed": "def"}],
    }
    only_git = AffectedPackage.model_validate(
        {"package": "npm/x", "ecosystem": "npm", "name": "x", "ranges": [git]}
    )
    result = match_affected(only_git, "1.0.0")
    assert not result.affected
    assert result.span is None
    assert "refused" in result.reason
    assert "commit graph" in result.reason
    assert "example.org" in result.reason
    assert (
        evaluate_explained(image(("npm/x", "1.0.0")), [advisory("G-1", only_git)], [], PolicyRules()).traces
        == []
    )
    # with an ECOSYSTEM range too, the finding comes from that range and the trace still says GIT was refused
    both = affected("npm", "npm/x", {"introduced": "0"}, {"fixed": "2.0.0"}, extra_ranges=[git])
    trace = only_trace(image(("npm/x", "1.0.0")), [advisory("G-1", both)])
    assert trace.range.kind == "ECOSYSTEM"
    assert len(trace.range.refused) == 1
    assert "GIT" in trace.range.refused[0]
    assert any("refused" in line for line in trace_lines(trace.model_dump(mode="json")))


def test_last_affected_closes_the_pair_inclusively() -> None:
    aff = affected("npm", "npm/x", {"introduced": "1.0.0"}, {"last_affected": "1.4.0"})
    trace = only_trace(image(("npm/x", "1.4.0")), [advisory("A-1", aff)])
    assert (trace.range.introduced, trace.range.fixed, trace.range.last_affected) == ("1.0.0", None, "1.4.0")
    assert pair_text(trace.range.model_dump()) == "[introduced 1.0.0, last_affected 1.4.0]"
    assert (
        evaluate_explained(image(("npm/x", "1.4.1")), [advisory("A-1", aff)], [], PolicyRules()).traces == []
    )


def test_limit_caps_the_pair_and_the_lowest_limit_above_wins() -> None:
    aff = affected("npm", "npm/x", {"introduced": "1.0.0"}, {"limit": "3.0.0"}, {"limit": "2.0.0"})
    trace = only_trace(image(("npm/x", "1.5.0")), [advisory("L-1", aff)])
    assert (trace.range.introduced, trace.range.fixed, trace.range.limit) == ("1.0.0", None, "2.0.0")
    assert pair_text(trace.range.model_dump()) == "[introduced 1.0.0, no upper bound) below limit 2.0.0"
    # between the two limits: still below one of them, so affected, capped by the 3.0.0 one
    assert only_trace(image(("npm/x", "2.5.0")), [advisory("L-1", aff)]).range.limit == "3.0.0"
    assert (
        evaluate_explained(image(("npm/x", "3.0.0")), [advisory("L-1", aff)], [], PolicyRules()).traces == []
    )


def test_listed_versions_name_the_listed_entry() -> None:
    aff = affected("PyPI", "pypi/x", versions=["1.0", "1.1"])
    trace = only_trace(image(("pypi/x", "1.0.0")), [advisory("P-1", aff)])
    assert (trace.range.kind, trace.range.listed) == ("versions", "1.0")
    assert pair_text(trace.range.model_dump()) == "listed version 1.0"


VERSIONS = st.tuples(st.integers(0, 9), st.integers(0, 9), st.integers(0, 9)).map(
    lambda t: ".".join(map(str, t))
)


def _key(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split("."))


@settings(max_examples=150, deadline=None)
@given(st.lists(VERSIONS, min_size=2, max_size=6, unique=True), VERSIONS, st.booleans())
def test_the_pair_always_contains_the_version(bounds: list[str], probe: str, inclusive: bool) -> None:
    """Whatever intervals the events describe, an affected version lies inside the pair reported."""
    ordered = sorted(bounds, key=_key)
    closing = "last_affected" if inclusive else "fixed"
    events = [{"introduced" if i % 2 == 0 else closing: v} for i, v in enumerate(ordered)]
    aff = affected("npm", "npm/x", *reversed(events))
    result = match_affected(aff, probe)
    if not result.affected:
        return
    span = result.span
    assert span is not None
    assert span.introduced is not None
    assert _key(span.introduced) <= _key(probe)
    if span.fixed is not None:
        assert _key(probe) < _key(span.fixed)
    if span.last_affected is not None:
        assert _key(probe) <= _key(span.last_affected)


# ---------------------------------------------------------------- VEX precedence


AFF = affected("npm", "npm/x", {"introduced": "0"}, {"fixed": "9.0.0"})


def test_latest_vex_statement_wins_and_the_others_say_why() -> None:
    older = statement("CVE-1", "not_affected", T0, "s-old")
    newer = statement("CVE-1", "affected", T0 + timedelta(hours=1), "s-new")
    adv = advisory("GHSA-1", AFF, aliases=["CVE-1"], severity="high")
    for vex in itertools.permutations([older, newer]):
        trace = only_trace(image(("npm/x", "1.0.0")), [adv], vex=list(vex))
        assert trace.outcome == "reported"
        assert [(v.statement_id, v.outcome) for v in trace.vex] == [("s-new", "won"), ("s-old", "overridden")]
        assert "later timestamp" in trace.vex[1].why
        assert trace.vex[1].justification == "component_not_present"
        assert trace.vex[0].product == "npm/x"
        assert trace.policy.rule == "severity_threshold"


def test_equal_timestamps_break_on_statement_id_and_a_suppression_is_traced() -> None:
    a = statement("GHSA-1", "affected", T0, "s-a")
    b = statement("GHSA-1", "not_affected", T0, "s-b")
    adv = advisory("GHSA-1", AFF, severity="critical")
    result = evaluate_explained(image(("npm/x", "1.0.0")), [adv], [b, a], PolicyRules())
    assert result.findings == []
    assert result.verdict == "pass"
    [trace] = result.traces
    assert trace.outcome == "suppressed"
    assert [(v.statement_id, v.outcome) for v in trace.vex] == [("s-b", "won"), ("s-a", "overridden")]
    assert "same timestamp" in trace.vex[1].why
    assert (trace.policy.rule, trace.policy.effect) == ("vex", "pass")


def test_vex_of_another_tenant_or_product_is_not_considered() -> None:
    foreign = statement("GHSA-1", "not_affected", T0, "s1", tenant="t2")
    other_product = statement("GHSA-1", "not_affected", T0, "s2", package="npm/y")
    by_image = statement("GHSA-1", "fixed", T0 - timedelta(days=1), "s3", image_digest=DIGEST)
    trace = only_trace(
        image(("npm/x", "1.0.0")), [advisory("GHSA-1", AFF)], vex=[foreign, other_product, by_image]
    )
    assert [(v.statement_id, v.product, v.outcome) for v in trace.vex] == [("s3", DIGEST, "won")]
    assert trace.outcome == "suppressed"


# ---------------------------------------------------------------- policy rules


@pytest.mark.parametrize(
    ("rules", "severity", "kev", "aliases", "rule", "effect"),
    [
        (PolicyRules(), "high", False, [], "severity_threshold", "fail"),
        (PolicyRules(), "medium", False, [], "severity_threshold", "pass"),
        (PolicyRules(), "low", True, [], "fail_on_kev", "fail"),
        (PolicyRules(fail_on_kev=False), "low", True, [], "severity_threshold", "pass"),
        (PolicyRules(allow_ids=["CVE-7"]), "critical", True, ["CVE-7"], "allow_ids", "pass"),
        (PolicyRules(severity_threshold="low"), "low", False, [], "severity_threshold", "fail"),
    ],
)
def test_policy_rule_that_decided(
    rules: PolicyRules, severity: str, kev: bool, aliases: list[str], rule: str, effect: str
) -> None:
    adv = advisory("GHSA-1", AFF, severity=severity, kev=kev, aliases=aliases)
    result = evaluate_explained(image(("npm/x", "1.0.0")), [adv], [], rules)
    [trace] = result.traces
    assert (trace.policy.rule, trace.policy.effect) == (rule, effect)
    assert result.verdict == ("fail" if effect == "fail" else "pass")
    assert policy_decision(result.findings[0], rules) == trace.policy


SEVERITIES = st.sampled_from(["critical", "high", "medium", "low", "none", "unknown"])


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(SEVERITIES, st.booleans(), st.sampled_from(["na", "aff", None])), min_size=1, max_size=5
    ),
    SEVERITIES,
    st.booleans(),
    st.permutations(range(5)),
)
def test_traces_agree_with_findings_and_verdict_in_any_input_order(
    specs: list[tuple[str, bool, str | None]], threshold: str, fail_on_kev: bool, order: list[int]
) -> None:
    advisories, vex = [], []
    for i, (severity, kev, status) in enumerate(specs):
        advisories.append(advisory(f"GHSA-{i}", AFF, severity=severity, kev=kev))
        if status is not None:
            vex.append(statement(f"GHSA-{i}", "not_affected" if status == "na" else "affected", T0, f"s{i}"))
    rules = PolicyRules(severity_threshold=threshold, fail_on_kev=fail_on_kev)  # type: ignore[arg-type]
    inv = image(("npm/x", "1.0.0"))
    result = evaluate_explained(inv, advisories, vex, rules)
    assert evaluate(inv, advisories, vex, rules) == (result.findings, result.verdict)
    reported = [t for t in result.traces if t.outcome == "reported"]
    assert [(t.id, t.package) for t in reported] == [(f.id, f.package) for f in result.findings]
    assert len(result.traces) == len(specs)
    fails = any(t.policy.effect == "fail" for t in reported)
    assert result.verdict == ("fail" if fails else "pass")
    shuffled = [advisories[i] for i in order if i < len(advisories)]
    again = evaluate_explained(inv, shuffled, list(reversed(vex)), rules)
    assert dumps([t.model_dump(mode="json") for t in again.traces]) == dumps(
        [t.model_dump(mode="json") for t in result.traces]
    )


# ---------------------------------------------------------------- result, signature, read model, API, CLI


def job() -> JobCommand:
    return JobCommand(
        job_id="j" * 64,
        run_id="run-1",
        tenant="t1",
        image_digest=DIGEST,
        kind="reevaluate",
        priority="normal",
        window_start=T0,
        window_end=T0 + timedelta(seconds=30),
        deadline=T0 + timedelta(hours=1),
        reasons=[Reason(source="advisory", id="GHSA-1")],
        inputs=JobInputs(),
    )


def result_with_traces() -> JobResult:
    vex = [statement("CVE-1", "affected", T0, "s1")]
    adv = advisory("GHSA-1", AFF, aliases=["CVE-1"], severity="high")
    ev = evaluate_explained(image(("npm/x", "1.0.0")), [adv], vex, PolicyRules())
    return completed_result(
        job(),
        ev.findings,
        ev.verdict,
        previous_findings=None,
        previous_verdict="unknown",
        attempts=[],
        finished_at=T0 + timedelta(seconds=31),
        traces=ev.traces,
    )


def test_traces_are_part_of_the_signed_payload() -> None:
    result = result_with_traces()
    assert result.traces
    assert result.traces[0].range.fixed == "9.0.0"
    payload = json.loads(statement_bytes(result))
    assert payload["predicate"]["traces"][0]["vex"][0]["statement_id"] == "s1"
    key = SigningKey.generate()
    event_id, _ = sign_completion(result, [key])
    stripped = result.model_copy(update={"traces": []})
    assert sign_completion(stripped, [key])[0] != event_id  # the digest covers the traces
    assert sign_completion(result, [key])[0] == event_id  # and is deterministic
    # the message round-trips through its own schema
    assert JobResult.model_validate_json(result.model_dump_json(by_alias=True)) == result


def test_read_model_keeps_traces_for_explain_but_not_in_the_image_view() -> None:
    state = apply_all({IMAGES: {}}, fold(result_with_traces(), Position("job-results", 0, 5)))
    doc = state[IMAGES][image_id("t1", DIGEST)]
    assert "traces" not in image_view(doc)
    answer = finding_explain(doc, "CVE-1")  # by alias
    assert answer is not None
    assert answer["verdict"] == "fail"
    assert answer["traces"][0]["range"]["introduced"] == "0"
    assert finding_explain(doc, "GHSA-404") is None


def test_http_executor_accepts_its_own_traces_and_refuses_malformed_ones() -> None:
    trace = result_with_traces().traces[0].model_dump(mode="json")
    finding = {"id": "GHSA-1", "package": "npm/x", "severity": "high"}
    good = httpx.Response(200, json={"verdict": "fail", "findings": [finding], "traces": [trace]})
    outcome = HttpExecutor.classify(good)
    assert isinstance(outcome, Ok)
    assert outcome.traces[0].id == "GHSA-1"
    bad = httpx.Response(200, json={"verdict": "fail", "traces": [{"id": "x"}]})
    assert isinstance(HttpExecutor.classify(bad), Permanent)
    assert isinstance(
        HttpExecutor.classify(httpx.Response(200, json={"verdict": "pass", "traces": {}})), Permanent
    )
    none = HttpExecutor.classify(httpx.Response(200, json={"verdict": "pass"}))
    assert none == Ok([], "pass")
    # the documented shape (schemas/json/scheduler.executor-report.v1.json) reads the same body
    assert ExecutorReport.model_validate({"verdict": "fail", "findings": [finding], "traces": [trace]}).traces


def test_cli_lookup_answers_from_the_read_model(capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    store = MemoryStore()
    store.apply_documents(fold(result_with_traces(), Position("job-results", 0, 1)))
    args = argparse.Namespace(image=DIGEST, vuln="GHSA-1", tenant=None)
    answer = _lookup(store, args)
    assert answer["tenant"] == "t1"
    assert answer["traces"][0]["id"] == "GHSA-1"
    from cli.output import CliError

    with pytest.raises(CliError, match="no trace"):
        _lookup(store, argparse.Namespace(image=DIGEST, vuln="CVE-404", tenant="t1"))
    with pytest.raises(CliError, match="not found"):
        _lookup(store, argparse.Namespace(image=DIGEST, vuln="GHSA-1", tenant="t2"))


@pytest.fixture
def explain_api(tmp_path: Path) -> Iterator[str]:
    from agents.settings import Settings
    from controlplane.app import ApiDeps, create_app
    from controlplane.auth import token_hash
    from controlplane.backends import MemoryPublisher, MemoryReadModels
    from controlplane.config import ApiConfig
    from controlplane.testing import ServerThread

    read = "scheduler.runs.read"
    path = tmp_path / "access.json"
    tokens = [
        {"token_sha256": token_hash("tok-t1"), "tenant": "t1", "scopes": [read]},
        {"token_sha256": token_hash("tok-t2"), "tenant": "t2", "scopes": [read]},
        {"token_sha256": token_hash("tok-none"), "tenant": "t1", "scopes": []},
    ]
    path.write_text(json.dumps({"tokens": tokens}))
    store = MemoryStore()
    store.apply_documents(fold(result_with_traces(), Position("job-results", 0, 1)))
    deps = ApiDeps(publisher=MemoryPublisher(), read_models=MemoryReadModels(store), clock=lambda: T0)
    app = create_app(Settings(topic_prefix="u."), deps, ApiConfig(tokens_path=str(path)))
    with ServerThread(app) as server:
        yield server.url


def test_explain_route_is_scoped_and_tenant_isolated(explain_api: str) -> None:
    url = f"{explain_api}/api/v1/images/{DIGEST}/findings/CVE-1/explain"
    ok = httpx.get(url, headers={"Authorization": "Bearer tok-t1"})
    assert ok.status_code == 200, ok.text
    body = ok.json()
    assert body["vulnerability"] == "CVE-1"
    assert body["traces"][0]["policy"]["rule"] == "severity_threshold"
    assert httpx.get(url, headers={"Authorization": "Bearer tok-t2"}).status_code == 404
    assert httpx.get(url, headers={"Authorization": "Bearer tok-none"}).status_code == 403
    missing = httpx.get(url.replace("CVE-1", "CVE-404"), headers={"Authorization": "Bearer tok-t1"})
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"


def test_preview_explain_json_shows_the_pair_for_each_affected_component(
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = sample_data()
    digest = "sha256:" + "cd" * 32
    argv = [
        "preview",
        "--sbom",
        str(data / "sbom/cyclonedx/cern-lhc-vdm-editor.json"),
        "--image-digest",
        digest,
        "--advisory",
        str(data / "osv/ghsa"),
        "--explain",
    ]
    assert main([*argv, "--json"]) == 0
    raw = capsys.readouterr().out
    explain = json.loads(raw)["images"][f"default/{digest}"]["explain"]
    minimist = [c for c in explain["components"] if c["advisory"] == "GHSA-vh95-rmgr-6w4m"]
    assert minimist == [
        {
            "purl": minimist[0]["purl"],
            "package": "npm/minimist",
            "version": "0.0.8",
            "advisory": "GHSA-vh95-rmgr-6w4m",
            "outcome": "reported",
            "pair": {
                "kind": "ECOSYSTEM",
                "introduced": "0",
                "fixed": "0.2.1",
                "last_affected": None,
                "limit": None,
                "listed": None,
            },
            "policy": "severity_threshold -> pass",
        }
    ]
    assert all(c["pair"]["introduced"] or c["pair"]["listed"] for c in explain["components"])
    assert main([*argv, "--json"]) == 0
    assert capsys.readouterr().out == raw  # deterministic
    assert main(argv) == 0
    assert "contains   0.0.8 in [introduced 0, fixed 0.2.1)" in capsys.readouterr().out


# ---------------------------------------------------------------- size budget


def big_evaluation(n: int) -> Any:
    packages = [f"npm/p{i:04d}" for i in range(n)]
    advisories = [
        advisory(
            f"GHSA-{i:04d}",
            affected("npm", p, {"introduced": "0"}, {"fixed": "2.0.0"}),
            severity="high" if i % 10 == 0 else "low",
        )
        for i, p in enumerate(packages)
    ]
    return evaluate_explained(image(*((p, "1.0.0") for p in packages)), advisories, [], PolicyRules())


def test_traces_fit_the_budget_failing_ones_first() -> None:
    from streams.findings import fit_traces

    traces = big_evaluation(60).traces
    assert fit_traces(traces) == (traces, 0)
    full = sum(len(dumps(t.model_dump(mode="json"))) + 1 for t in traces)
    compact, omitted = fit_traces(traces, budget=full - 1)
    assert omitted == 0
    assert all(t.range.written == [] and t.range.fixed == "2.0.0" for t in compact)
    few, omitted = fit_traces(traces, budget=full // 6)
    assert 0 < len(few) < len(traces)
    assert omitted == len(traces) - len(few)
    assert {t.id for t in few} >= {t.id for t in traces if t.policy.effect == "fail"}
    assert few == sorted(few, key=lambda t: (t.package, t.id, t.version or "", t.purl))
    assert fit_traces(list(reversed(traces)), budget=full // 6) == (few, omitted)


def test_a_result_with_thousands_of_findings_stays_under_the_message_cap() -> None:
    ev = big_evaluation(3000)
    result = completed_result(
        job(),
        ev.findings,
        ev.verdict,
        previous_findings=None,
        previous_verdict="unknown",
        attempts=[],
        finished_at=T0,
        traces=ev.traces,
    )
    assert len(result.findings) == 3000
    assert result.traces_omitted > 0
    assert len(result.traces) + result.traces_omitted == 3000
    assert len(statement_bytes(result)) < 1_048_576
