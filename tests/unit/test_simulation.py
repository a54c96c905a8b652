"""Policy simulation core: verdict flips, findings that newly fail or pass, totals, determinism, the signed
simulation-completed event, and the read-model driver behind `stella-sched simulate` (which writes nothing)."""

from __future__ import annotations

import argparse
import copy
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from hypothesis import given, settings
from hypothesis import strategies as st

from cli.output import CliError
from cli.simulate import load_policy, run_simulation
from controlplane import webhook_sig
from controlplane.backends import MemoryPublisher
from controlplane.testing import ServerThread
from projections.fold import Position, fold
from projections.simulation import simulate_documents
from projections.store import MemoryStore
from schemas.messages import (
    AdvisoryDelta,
    AffectedPackage,
    Component,
    Finding,
    Inventory,
    JobCommand,
    JobInputs,
    JobResult,
    PolicyRules,
    Reason,
    Selector,
    SimulationCompleted,
)
from signing.dsse import verify
from signing.keys import SigningKey, generate_keypair
from signing.statement import PREDICATE_SIMULATION_COMPLETED, sign_completion
from streams.evaluator import evaluate_explained, verdict_for
from streams.findings import completed_result
from streams.simulation import LiveImage, simulate, simulate_image, simulation_id

T0 = datetime(2026, 1, 1, tzinfo=UTC)
LIVE = PolicyRules()  # fail on high and above, and on KEV
STRICT = PolicyRules(severity_threshold="medium")


def digest(n: int) -> str:
    return "sha256:" + f"{n:064x}"


def finding(vid: str, severity: str, kev: bool = False, package: str = "npm/x") -> Finding:
    return Finding.model_validate({"id": vid, "package": package, "severity": severity, "kev": kev})


def live(n: int, *findings: Finding) -> LiveImage:
    return LiveImage(digest(n), verdict_for(findings, LIVE), tuple(findings))


def test_a_stricter_threshold_flips_medium_images_to_fail() -> None:
    images = [live(1, finding("A", "medium")), live(2, finding("B", "high")), live(3, finding("C", "low"))]
    sim = simulate("acme", Selector(all=True), STRICT, LIVE, images, at=T0)
    by = {i.image_digest: i for i in sim.images}
    assert (by[digest(1)].live_verdict, by[digest(1)].simulated_verdict) == ("pass", "fail")
    assert by[digest(1)].newly_failing == ["A npm/x"]
    assert (by[digest(2)].live_verdict, by[digest(2)].simulated_verdict) == ("fail", "fail")
    assert by[digest(3)].simulated_verdict == "pass"
    t = sim.totals
    assert (t.images, t.to_fail, t.to_pass, t.unchanged, t.newly_failing, t.newly_passing) == (
        3,
        1,
        0,
        2,
        1,
        0,
    )


def test_an_allow_list_makes_findings_newly_pass() -> None:
    candidate = PolicyRules(allow_ids=["CVE-9"])
    image = LiveImage(
        digest(1), "fail", (finding("GHSA-9", "critical").model_copy(update={"aliases": ["CVE-9"]}),)
    )
    result = simulate_image(image, LIVE, candidate)
    assert (result.simulated_verdict, result.newly_passing) == ("pass", ["GHSA-9 npm/x"])


def test_unevaluated_images_are_counted_not_guessed() -> None:
    sim = simulate("acme", Selector(all=True), STRICT, LIVE, [LiveImage(digest(1), "unknown")], at=T0)
    assert sim.images[0].simulated_verdict == "unknown"
    assert sim.totals.not_evaluated == 1


def test_live_failures_come_from_traces_when_present() -> None:
    # the live policy allowed A (trace says so): a candidate without the allow-list makes it newly fail
    image = LiveImage(digest(1), "pass", (finding("A", "high"),), failing=frozenset())
    assert simulate_image(image, LIVE, LIVE).newly_failing == ["A npm/x"]


SEV = st.sampled_from(["critical", "high", "medium", "low", "none", "unknown"])
IMAGES = st.lists(
    st.lists(st.tuples(st.sampled_from("ABCD"), SEV, st.booleans()), max_size=4), min_size=1, max_size=6
)


@settings(max_examples=100, deadline=None)
@given(IMAGES, SEV, st.booleans(), st.randoms(use_true_random=False))
def test_totals_are_consistent_and_order_does_not_matter(
    spec: list[list[tuple[str, str, bool]]], threshold: str, kev: bool, rnd: Any
) -> None:
    candidate = PolicyRules(severity_threshold=threshold, fail_on_kev=kev)  # type: ignore[arg-type]
    images = [live(n, *(finding(v, s, k, f"npm/{v}") for v, s, k in fs)) for n, fs in enumerate(spec)]
    sim = simulate("t", Selector(all=True), candidate, LIVE, images, at=T0)
    t = sim.totals
    assert t.to_fail + t.to_pass + t.unchanged + t.not_evaluated == t.images == len(spec)
    for image, result in zip(images, sim.images, strict=True):
        assert result.simulated_verdict == verdict_for(image.findings, candidate)
    shuffled = list(images)
    rnd.shuffle(shuffled)
    again = simulate("t", Selector(all=True), candidate, LIVE, shuffled, at=T0)
    assert again.model_dump_json() == sim.model_dump_json()


def test_simulation_id_is_stable_and_distinguishes_requests() -> None:
    one = simulation_id("acme", Selector(all=True), STRICT)
    assert one == simulation_id("acme", Selector(all=True), STRICT)
    assert one != simulation_id("globex", Selector(all=True), STRICT)
    assert one != simulation_id("acme", Selector(all=True), LIVE)
    assert one != simulation_id("acme", Selector(all=True), STRICT, "retry-2")


def test_the_simulation_completed_event_is_signed_and_verifies() -> None:
    sim = simulate("acme", Selector(all=True), STRICT, LIVE, [live(1, finding("A", "medium"))], at=T0)
    key = SigningKey.generate()
    event_id, envelope = sign_completion(sim, [key])
    checked = verify(envelope, {key.keyid: key.verify_key})
    assert checked.ok, checked
    assert isinstance(checked.statement, dict)
    assert checked.statement["predicateType"] == PREDICATE_SIMULATION_COMPLETED
    assert checked.statement["subject"][0]["name"] == sim.simulation_id
    assert SimulationCompleted.model_validate(checked.statement["predicate"]) == sim
    assert sign_completion(sim, [key])[0] == event_id


# ---------------------------------------------------------------- over the read model


def job(n: int) -> JobCommand:
    return JobCommand(
        job_id=f"{n:064x}",
        run_id="run-1",
        tenant="acme",
        image_digest=digest(n),
        kind="reevaluate",
        priority="normal",
        window_start=T0,
        window_end=T0 + timedelta(seconds=30),
        deadline=T0 + timedelta(hours=1),
        reasons=[Reason(source="advisory", id="A")],
        inputs=JobInputs(),
    )


def estate() -> MemoryStore:
    """Three evaluated acme images (medium, high, nothing), one globex image, one image never evaluated."""
    store = MemoryStore()
    advisories = [
        AdvisoryDelta.model_validate(
            {
                "id": f"GHSA-{sev}",
                "modified": T0,
                "severity": sev,
                "affected": [
                    AffectedPackage.model_validate(
                        {"package": f"npm/{sev}", "ecosystem": "npm", "name": sev, "versions": ["1.0.0"]}
                    )
                ],
            }
        )
        for sev in ("medium", "high")
    ]
    images: list[tuple[int, str, list[str]]] = [
        (1, "acme", ["medium"]),
        (2, "acme", ["high"]),
        (3, "acme", []),
        (4, "globex", ["medium"]),
    ]
    for offset, (n, tenant, packages) in enumerate(images, start=1):
        inv = Inventory(
            tenant=tenant,
            image_digest=digest(n),
            namespaces=["prod" if n != 3 else "dev"],
            components=[
                Component(purl=f"pkg:npm/{p}@1.0.0", package=f"npm/{p}", version="1.0.0") for p in packages
            ],
            observed_at=T0,
        )
        ev = evaluate_explained(inv, advisories, [], LIVE)
        command = job(n).model_copy(update={"tenant": tenant})
        result: JobResult = completed_result(
            command,
            ev.findings,
            ev.verdict,
            previous_findings=None,
            previous_verdict="unknown",
            attempts=[],
            finished_at=T0 + timedelta(minutes=n),
            traces=ev.traces,
        )
        store.apply_documents(fold(inv, Position("inventory", 0, offset)))
        store.apply_documents(fold(result, Position("job-results", 0, offset)))
    never = Inventory(
        tenant="acme", image_digest=digest(5), namespaces=["prod"], components=[], observed_at=T0
    )
    store.apply_documents(fold(never, Position("inventory", 0, 99)))
    return store


def test_read_model_simulation_reports_flips_and_writes_nothing() -> None:
    store = estate()
    before = copy.deepcopy(store.state)
    docs = store.dump("images")
    sim = simulate_documents(docs, "acme", Selector(all=True), STRICT)
    by = {i.image_digest: (i.live_verdict, i.simulated_verdict, i.newly_failing) for i in sim.images}
    assert by == {
        digest(1): ("pass", "fail", ["GHSA-medium npm/medium"]),
        digest(2): ("fail", "fail", []),
        digest(3): ("pass", "pass", []),
        digest(5): ("unknown", "unknown", []),
    }
    assert sim.at == T0 + timedelta(minutes=3)  # the latest evaluation among the selected images
    prod = simulate_documents(docs, "acme", Selector(namespaces=["prod"]), STRICT)
    assert [i.image_digest for i in prod.images] == [digest(1), digest(2), digest(5)]
    assert store.state == before


def test_cli_simulation_from_a_policy_file_and_signed(tmp_path: Path) -> None:
    policy = tmp_path / "stricter.yaml"
    policy.write_text(
        "tenant: acme\npolicy_id: p\nrevision: 3\nactivated_at: 2026-01-01T00:00:00Z\n"
        "selector: {namespaces: [prod]}\nrules: {severity_threshold: medium}\n"
    )
    generate_keypair(tmp_path / "k.key", tmp_path / "k.pub.json")
    args = argparse.Namespace(
        policy=str(policy),
        tenant="acme",
        all=False,
        digest=[],
        namespace=[],
        repository=[],
        label=[],
        idempotency_key="",
        sign_key=str(tmp_path / "k.key"),
    )
    out = run_simulation(estate(), args)
    sim = out["simulation"]
    assert sim["selector"]["namespaces"] == ["prod"]
    assert sim["totals"]["to_fail"] == 1
    from cli.verify import check, load_trusted

    assert check("sim", out["envelope"], load_trusted(str(tmp_path / "k.pub.json"))).ok
    assert json.dumps(run_simulation(estate(), args), sort_keys=True) == json.dumps(out, sort_keys=True)


def test_policy_file_errors_name_the_file_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"severity_threshold": "severe"}))
    with pytest.raises(CliError, match=r"bad.json: severity_threshold"):
        load_policy(str(bad))
    good = tmp_path / "ok.json"
    good.write_text(json.dumps({"fail_on_kev": False}))
    rules, selector = load_policy(str(good))
    assert rules == PolicyRules(fail_on_kev=False)
    assert selector is None


# ---------------------------------------------------------------- the API route and the signer's view


@pytest.fixture
def simulation_api(tmp_path: Path) -> Iterator[tuple[str, MemoryPublisher, MemoryStore]]:
    from agents.settings import Settings
    from controlplane.app import ApiDeps, create_app
    from controlplane.auth import token_hash
    from controlplane.backends import MemoryReadModels
    from controlplane.config import ApiConfig

    read, write = "scheduler.runs.read", "scheduler.runs.write"
    tokens = [
        {"token_sha256": token_hash("tok-w"), "tenant": "acme", "scopes": [read, write]},
        {"token_sha256": token_hash("tok-r"), "tenant": "acme", "scopes": [read]},
    ]
    path = tmp_path / "access.json"
    path.write_text(json.dumps({"tokens": tokens}))
    store, publisher = estate(), MemoryPublisher(partitions=2)
    deps = ApiDeps(publisher=publisher, read_models=MemoryReadModels(store), clock=lambda: T0)
    app = create_app(Settings(topic_prefix="u."), deps, ApiConfig(tokens_path=str(path)))
    with ServerThread(app) as server:
        yield server.url, publisher, store


def test_simulation_route_answers_produces_the_event_and_touches_nothing(
    simulation_api: tuple[str, MemoryPublisher, MemoryStore],
) -> None:
    url, publisher, store = simulation_api
    before = copy.deepcopy(store.state)
    body = {
        "rules": {"severity_threshold": "medium"},
        "selector": {"namespaces": ["prod"]},
        "mode": "read-model",
    }
    headers = {"Authorization": "Bearer tok-w"}
    first = httpx.post(url + "/api/v1/policies/simulations", json=body, headers=headers)
    assert first.status_code == 202, first.text
    out = first.json()
    assert out["simulation"]["totals"]["to_fail"] == 1
    [(topic, _partition, _offset, key, value)] = publisher.records
    assert (topic, key) == ("u.simulations", b"acme")
    message = SimulationCompleted.model_validate_json(value or b"")
    assert message.simulation_id == out["simulation_id"]
    again = httpx.post(url + "/api/v1/policies/simulations", json=body, headers=headers).json()
    assert again["simulation"] == out["simulation"]  # same state, same request: same bytes
    assert store.state == before
    reader = httpx.post(
        url + "/api/v1/policies/simulations", json=body, headers={"Authorization": "Bearer tok-r"}
    )
    assert reader.status_code == 403
    bad = httpx.post(url + "/api/v1/policies/simulations", json={"rules": {"x": 1}}, headers=headers)
    assert bad.status_code == 422


def test_the_signer_signs_simulations_under_their_id() -> None:
    from agents.signer_stage import signable, subject_of

    sim = simulate("acme", Selector(all=True), STRICT, LIVE, [live(1, finding("A", "medium"))], at=T0)
    assert signable(sim)
    assert subject_of(sim) == sim.simulation_id


def test_callback_gets_the_hmac_signed_simulation(
    simulation_api: tuple[str, MemoryPublisher, MemoryStore],
) -> None:
    url, _, _ = simulation_api
    received: list[tuple[bytes, dict[str, str]]] = []
    arrived = threading.Event()
    receiver = FastAPI()

    @receiver.post("/hook")
    async def hook(request: Request) -> dict[str, bool]:
        received.append((await request.body(), dict(request.headers)))
        arrived.set()
        return {"ok": True}

    secret = "s3cret-for-callbacks"
    with ServerThread(receiver) as hook_server:
        body = {
            "rules": {"severity_threshold": "medium"},
            "callback": {"url": hook_server.url + "/hook", "secret": secret},
            "mode": "read-model",
        }
        resp = httpx.post(
            url + "/api/v1/policies/simulations", json=body, headers={"Authorization": "Bearer tok-w"}
        )
        assert resp.status_code == 202, resp.text
        assert resp.json()["callback"] == "scheduled"
        assert "secret" not in json.dumps(resp.json()["simulation"])
        assert arrived.wait(60)
    payload, headers = received[0]
    # The feed webhooks' scheme: the HMAC covers timestamp, nonce and kind as well as the body.
    signature = webhook_sig.parse(headers["x-stella-signature"])
    assert signature is not None
    assert webhook_sig.fresh(signature, time.time())
    expected = webhook_sig.digest(
        secret.encode(), signature.timestamp, signature.nonce, "simulation-completed", payload
    )
    assert hmac.compare_digest(signature.digest, expected)
    assert headers["x-stella-event-id"] == hashlib.sha256(payload).hexdigest()
    assert json.loads(payload)["simulation_id"] == resp.json()["simulation_id"]
    short = {"rules": {}, "callback": {"url": "ftp://x", "secret": "short"}}
    assert (
        httpx.post(
            url + "/api/v1/policies/simulations", json=short, headers={"Authorization": "Bearer tok-w"}
        ).status_code
        == 422
    )
