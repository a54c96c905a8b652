"""The audit ledger end to end: the demo feed through two real workers, one SIGKILLed mid-feed and
replaced (two rebalances); then `stella-sched audit export` / `verify` finds every tenant's chain intact
and sealed, every job chained, and names each kind of tampering of the exported file."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from tests.integration.pipeline_kit import Deployment, Pipeline, advisories, inventories, later, vex_minimist

AUDIT_ENV = {
    "STELLA_AUDIT_SNAPSHOT_EVERY": "5",
    "STELLA_AUDIT_SNAPSHOT_SECONDS": "3600",
    "STELLA_AUDIT_SEAL_SECONDS": "3",
}


def audit(pipe: Pipeline, *args: str) -> tuple[int, str, str]:
    """The CLI as an auditor runs it: a process of its own, the deployment's topics."""
    env = {**os.environ, **pipe.env()}
    proc = subprocess.run(
        [sys.executable, "-m", "cli.main", "audit", *args, "--quiet"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return proc.returncode, proc.stdout, proc.stderr


async def wait_sealed(pipe: Pipeline, keys: Path, jobs: set[str], timeout: float = 180.0) -> dict[str, Any]:
    """Until every job has its planned, started and terminal entries and every chain is sealed."""
    deadline = time.monotonic() + timeout
    report: dict[str, Any] = {}
    while time.monotonic() < deadline:
        pipe.alive()
        code, out, err = await asyncio.to_thread(audit, pipe, "verify", "--public-keys", str(keys), "--json")
        assert code in (0, 1), err
        report = orjson.loads(out)
        assert report["ok"], report  # a fork or a gap is never transient
        code, out, _ = await asyncio.to_thread(audit, pipe, "export", "--out", "-")
        kinds: dict[str, set[str]] = {}
        for line in out.splitlines()[1:]:
            doc = orjson.loads(line)
            if "entry" in doc and doc["entry"]["job_id"]:
                kinds.setdefault(doc["entry"]["job_id"], set()).add(doc["entry"]["kind"])
        complete = all({"planned", "started", "completed"} <= kinds.get(j, set()) for j in jobs)
        if complete and all(t["unsealed"] == 0 for t in report["tenants"]):
            return report
        await asyncio.sleep(2.0)
    raise AssertionError(
        f"the audit ledger did not cover every job and seal within {timeout:.0f} s: {report}"
    )


async def test_audit_ledger_survives_sigkill_and_names_tampering(
    deployment: Deployment, tmp_path: Path
) -> None:
    pipe = deployment()
    keys = tmp_path / "keys" / "test.pub.json"
    try:
        # One worker first: two starting at once race to create the read-model collections.
        await pipe.start(workers=1, extra_env=AUDIT_ENV)
        await pipe.publish(inventories())
        await pipe.settle(min_jobs=3)
        pipe.add_worker(AUDIT_ENV)  # rebalance: the newcomer takes some tenants' partitions
        await pipe.publish(advisories(later(60)))
        await asyncio.sleep(1.5)  # mid-phase: jobs and audit facts in flight
        victim = pipe.workers[0]
        assert victim.alive(), victim.output()[-3000:]
        victim.kill()
        await pipe.settle(min_jobs=5)  # the survivor takes the victim's partitions (rebalance)
        pipe.add_worker(AUDIT_ENV)  # and a replacement takes some back (another rebalance)
        await pipe.publish(vex_minimist(later(120)))
        await pipe.settle(min_jobs=7)

        jobs = {orjson.loads(r.value)["job_id"] for r in await pipe.records("jobs")}
        report = await wait_sealed(pipe, keys, jobs)
        tenants = {t["tenant"]: t for t in report["tenants"]}
        assert set(tenants) == {"acme", "beta"}
        assert all(t["snapshots"] >= 1 and t["entries"] >= 3 for t in tenants.values())

        # the snapshots' read model: one document per tenant and index (the projector may lag)
        total = sum(t["snapshots"] for t in tenants.values())
        for _ in range(120):
            if pipe.mongo().audit_snapshots.count_documents({}) >= total:
                break
            await asyncio.sleep(1.0)
        docs = {d["_id"]: d for d in pipe.mongo().audit_snapshots.find()}
        assert len(docs) == total, sorted(docs)
        assert {d["tenant"] for d in docs.values()} == {"acme", "beta"}

        # every job the read models know is chained
        code, out, err = await asyncio.to_thread(
            audit, pipe, "verify", "--public-keys", str(keys), "--check-read-models"
        )
        assert code == 0, out + err

        # an inclusion proof for a job, verified against its signed snapshot
        job = sorted(jobs)[0]
        code, out, err = await asyncio.to_thread(
            audit, pipe, "prove", "--job", job, "--public-keys", str(keys), "--json"
        )
        assert code == 0, out + err
        assert {p["kind"] for p in orjson.loads(out)["proofs"]} >= {"planned", "started", "completed"}

        # export, verify offline, then tamper with the file
        export = tmp_path / "audit.jsonl"
        code, _, err = await asyncio.to_thread(
            audit, pipe, "export", "--out", str(export), "--tenant", "acme"
        )
        assert code == 0, err
        lines = export.read_bytes().splitlines()
        entries = [i for i, line in enumerate(lines) if line.startswith(b'{"entry"')]
        snapshots = [i for i, line in enumerate(lines) if line.startswith(b'{"snapshot"')]
        assert len(entries) >= 6

        def check(new_lines: list[bytes]) -> tuple[str, int, str]:
            export.write_bytes(b"\n".join(new_lines) + b"\n")
            code, out, err = audit(
                pipe, "verify", "--file", str(export), "--public-keys", str(keys), "--json"
            )
            problem = orjson.loads(out)["tenants"][0]["problem"]
            assert code == 1, (out, err)
            return problem["code"], problem["seq"], problem["location"]

        export.write_bytes(b"\n".join(lines) + b"\n")
        code, out, err = audit(pipe, "verify", "--file", str(export), "--public-keys", str(keys))
        assert code == 0, out + err

        def seq_at(index: int) -> int:
            return int(orjson.loads(lines[index])["entry"]["seq"])

        third = entries[2]
        assert check(lines[:third] + lines[third + 1 :])[:2] == ("deleted", seq_at(third))
        altered = orjson.loads(lines[third])
        altered["entry"]["kind"] = "completed" if altered["entry"]["kind"] != "completed" else "failed"
        code_, seq, where = check([*lines[:third], orjson.dumps(altered), *lines[third + 1 :]])
        assert (code_, seq, where) == ("altered", seq_at(third), f"{export}:{third + 1}")
        swapped = list(lines)
        swapped[third], swapped[third + 1] = swapped[third + 1], swapped[third]
        assert check(swapped)[:2] == ("reordered", seq_at(third))
        keep = entries[:4]
        truncated = [line for i, line in enumerate(lines) if i not in entries or i in keep]
        assert check(truncated)[:2] == ("truncated", seq_at(entries[4]))
        assert snapshots
    finally:
        pipe.stop()
