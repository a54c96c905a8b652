"""The offline preview on real data: the CERN vdm-editor CycloneDX SBOM against the GHSA npm records."""

from __future__ import annotations

from datetime import UTC, datetime

from schemas.canonical import dumps
from schemas.messages import PolicyChange, RuntimeEvent
from streams.preview import preview
from tests.conftest import sample_data
from tests.unit._loaders import advisory_from_osv, inventory_from_cyclonedx

SBOM = sample_data() / "sbom" / "cyclonedx" / "cern-lhc-vdm-editor.json"
KEY = "t1/sha256:" + "a" * 64


def _advisories():  # type: ignore[no-untyped-def]
    return [advisory_from_osv(p) for p in sorted((sample_data() / "osv" / "ghsa").glob("GHSA-*.json"))]


def test_which_packages_are_and_are_not_affected_and_why() -> None:
    result = preview([inventory_from_cyclonedx(SBOM)], _advisories())
    lines = {(c.advisory_id, c.package, c.version): c for c in result.explanations[KEY]}
    status = {k: c.status for k, c in lines.items()}
    assert status == {
        # minimist 0.0.8 < 0.2.1 (introduced 0)
        ("GHSA-vh95-rmgr-6w4m", "npm/minimist", "0.0.8"): "affected",
        # ws 6.2.1 in [6.0.0, 6.2.2)
        ("GHSA-6fc8-4gx4-v693", "npm/ws", "6.2.1"): "affected",
        # minimatch 3.0.4 < 3.0.5
        ("GHSA-f8q6-p94x-37v3", "npm/minimatch", "3.0.4"): "affected",
        # https-proxy-agent 2.2.4 is past the fix 2.2.3
        ("GHSA-pc5p-h8pf-mvwp", "npm/https-proxy-agent", "2.2.4"): "not_affected",
        # debug: three copies; 2.6.9 is exactly the fix (exclusive), 3.2.6 and 4.1.1 are inside their ranges
        ("GHSA-gxpj-cx7g-858c", "npm/debug", "2.6.9"): "not_affected",
        ("GHSA-gxpj-cx7g-858c", "npm/debug", "3.2.6"): "affected",
        ("GHSA-gxpj-cx7g-858c", "npm/debug", "4.1.1"): "affected",
    }
    assert "fixed=3.2.7" in lines[("GHSA-gxpj-cx7g-858c", "npm/debug", "3.2.6")].reason
    assert "fixed=2.2.3" in lines[("GHSA-pc5p-h8pf-mvwp", "npm/https-proxy-agent", "2.2.4")].reason
    # One job per advisory window (their modified times differ), none for https-proxy-agent.
    advisories_in_jobs = sorted(a.id for j in result.jobs for a in j.inputs.advisories)
    assert advisories_in_jobs == [
        "GHSA-6fc8-4gx4-v693",
        "GHSA-f8q6-p94x-37v3",
        "GHSA-gxpj-cx7g-858c",
        "GHSA-vh95-rmgr-6w4m",
    ]
    debug_job = next(j for j in result.jobs if j.inputs.advisories[0].id == "GHSA-gxpj-cx7g-858c")
    assert len([r for r in debug_job.reasons if r.source == "advisory"]) == 2  # 3.2.6 and 4.1.1, one job


def test_preview_is_deterministic_whatever_the_input_order() -> None:
    inv = inventory_from_cyclonedx(SBOM)
    other = inventory_from_cyclonedx(SBOM, tenant="t2", digest="sha256:" + "b" * 64)
    advisories = _advisories()
    a = preview([inv, other], advisories)
    b = preview([other, inv], list(reversed(advisories)))
    assert [dumps(j) for j in a.jobs] == [dumps(j) for j in b.jobs]
    assert a.explanations == b.explanations


def test_running_images_and_policies_in_preview() -> None:
    inv = inventory_from_cyclonedx(SBOM)
    at = datetime(2024, 2, 14, 18, 15, 16, tzinfo=UTC)  # same window as GHSA-f8q6 (modified 18:15:16)
    running = RuntimeEvent.model_validate(
        {
            "tenant": "t1",
            "image_digest": inv.image_digest,
            "cluster": "c",
            "namespace": "n",
            "state": "running",
            "observed_at": at,
        }
    )
    policy = PolicyChange.model_validate(
        {"tenant": "t1", "policy_id": "p", "revision": 2, "activated_at": at}
    )
    result = preview([inv], _advisories(), policies=[policy], runtime=[running])
    job = next(j for j in result.jobs if j.window_start <= at < j.window_end)
    assert job.priority == "high"  # high-severity minimatch on a running image
    assert job.inputs.policy_revision == 2
    assert {r.source for r in job.reasons} == {"advisory", "policy", "runtime"}
