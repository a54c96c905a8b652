"""`stella-sched demo` (behind `make run`): the whole product on a small feed of real files.

It resets the demo topics and database, starts a worker and the HTTP control plane in the background,
then publishes ops/demo/feed in phases (inventories, advisories, VEX, a policy revision, a runtime event,
then a schedule that fires once and is paused) and after each phase waits for the runs it caused and prints their DeltaSummary. The processes keep
running afterwards so you can query them; `make down` stops them.

The API answers only bearer tokens listed in its access file, so the demo writes one
(``run/api/demo-api-tokens.json``, not beside the signing keys: ``verify --public-keys run/keys`` reads that folder) with a fresh token for the demo tenant and every scope, and prints the
token with a `curl` line that works.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from pymongo import MongoClient

from controlplane.auth import token_hash
from controlplane.config import SCOPES
from schemas.messages import TERMINAL_RUN_STATES

REPO = Path(__file__).resolve().parents[1]
FEED = REPO / "ops" / "demo" / "feed"
RUN = Path(os.environ.get("RUN_DIR", REPO / "run"))
PREFIX = "demo."
TENANT = "demo"
CERN_DIGEST = "sha256:5e4c1f0d9a3b7c2e8f6a1d0b9c8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e"
WORKER_PORT = int(os.environ.get("STELLA_DEMO_WORKER_PORT", "6066"))
API_PORT = int(os.environ.get("STELLA_API_PORT", "8080"))
ACCESS_FILE = RUN / "api" / "demo-api-tokens.json"


def say(text: str) -> None:
    print(text, flush=True)


def write_demo_access(path: Path, tenant: str = TENANT) -> str:
    """Write the API's access file with one new token for ``tenant`` holding every scope; return the token.

    Only the token's sha256 goes into the file (the API refuses plain tokens there); the token itself is
    returned for the user, and replaced at every demo run. The file is written owner-only, then renamed, so
    an API re-reading it never sees half a file."""
    token = secrets.token_urlsafe(32)
    doc = {
        "tokens": [
            {"token_sha256": token_hash(token), "tenant": tenant, "scopes": list(SCOPES), "name": "demo"}
        ]
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(doc, out, indent=2)
        out.write("\n")
    os.replace(tmp, path)
    return token


def curl_line(token: str, port: int = API_PORT) -> str:
    return f'curl -H "Authorization: Bearer {token}" http://127.0.0.1:{port}/api/v1/runs'


def console_url(port: int = API_PORT) -> str:
    """The runs console (docs/console.md); its sign-in form takes the same token."""
    return f"http://127.0.0.1:{port}/console/"


def demo_env(bootstrap: str, mongo: str, app_id: str, db_name: str) -> dict[str, str]:
    return {
        **os.environ,
        "KAFKA_BOOTSTRAP": bootstrap,
        "MONGO_URL": mongo,
        "STELLA_TOPIC_PREFIX": PREFIX,
        "STELLA_APP_ID": app_id,
        "STELLA_MONGO_DB": db_name,
        "STELLA_DATA_DIR": str(RUN / "demo-data"),
        "STELLA_WINDOW_SECONDS": "5",
        "STELLA_GRACE_SECONDS": "1",
        "STELLA_IDLE_FLUSH_SECONDS": "2",
        "STELLA_PUBLIC_KEYS": str(RUN / "keys"),
        "STELLA_SIGNING_KEY_FILE": str(RUN / "keys" / "demo-signing.key"),
        "STELLA_API_TOKENS": str(ACCESS_FILE),
        "PYTHONUNBUFFERED": "1",
    }


async def reset_topics(bootstrap: str) -> None:
    """Drop the previous demo's topics (and its faust changelogs) so the demo always starts clean."""
    from agents.topology import topics
    from agents.topology_admin import ensure_topics

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        old = [t for t in await admin.list_topics() if t.startswith((PREFIX, "stella-demo-"))]
        if old:
            await admin.delete_topics(old)
            for _ in range(60):
                if not set(old) & set(await admin.list_topics()):
                    break
                await asyncio.sleep(0.5)
    finally:
        await admin.close()
    for _ in range(20):
        try:
            await ensure_topics(bootstrap, topics(PREFIX))
            return
        except Exception:  # deletion is asynchronous on the broker: re-creating can race it
            await asyncio.sleep(1)
    await ensure_topics(bootstrap, topics(PREFIX))


def start(name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    log = (RUN / f"demo-{name}.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", *args],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    (RUN / f"demo-{name}.pid").write_text(str(proc.pid))
    return proc


def stop_previous() -> None:
    for pid_file in RUN.glob("demo-*.pid"):
        with contextlib.suppress(ProcessLookupError, ValueError, PermissionError):
            os.killpg(int(pid_file.read_text()), signal.SIGTERM)
        pid_file.unlink(missing_ok=True)


def publish(env: dict[str, str], kind: str, *paths: str, extra: tuple[str, ...] = ()) -> None:
    from cli.main import main as cli

    os.environ.update({"KAFKA_BOOTSTRAP": env["KAFKA_BOOTSTRAP"], "STELLA_TOPIC_PREFIX": PREFIX})
    code = cli(["publish", kind, *paths, "--quiet", *extra])
    if code not in (0,):
        raise SystemExit(f"demo: publishing {kind} failed (exit {code})")


def runs_snapshot(db: Any) -> dict[str, dict[str, Any]]:
    return {doc["_id"]: doc for doc in db.runs.find({})}


def wait_for_runs(
    db: Any, before: set[str], worker: subprocess.Popen[bytes], timeout: float = 120
) -> list[dict[str, Any]]:
    """New runs caused by the last phase, once all are terminal and no new one appeared for a while."""
    deadline = time.monotonic() + timeout
    stable_since, last_ids = time.monotonic(), set(before)
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise SystemExit(
                f"demo: the worker exited (code {worker.returncode}); see {RUN / 'demo-worker.log'}"
            )
        runs = runs_snapshot(db)
        new = {k: v for k, v in runs.items() if k not in before}
        if set(runs) != last_ids:
            last_ids, stable_since = set(runs), time.monotonic()
        done = new and all(r.get("state") in TERMINAL_RUN_STATES for r in new.values())
        if done and time.monotonic() - stable_since > 4:
            return sorted(new.values(), key=lambda r: (r.get("created_at", ""), r["_id"]))
        time.sleep(0.5)
    raise SystemExit(f"demo: runs did not complete within {timeout:.0f} s; see {RUN / 'demo-worker.log'}")


def show(title: str, runs: list[dict[str, Any]]) -> None:
    say(f"\n== {title}")
    for run in runs:
        s = run.get("summary") or {}
        say(
            f"  {run['_id']}  {run.get('state')}  window {run.get('created_at')}  jobs {run.get('jobs_total')}  "
            f"images {s.get('images', 0)}  +{s.get('added', 0)} -{s.get('removed', 0)} "
            f"~{s.get('severity_changed', 0)}  new critical {s.get('new_critical', 0)} high {s.get('new_high', 0)} "
            f"KEV {s.get('kev_hits', 0)}  verdict→fail {s.get('verdict_to_fail', 0)} →pass {s.get('verdict_to_pass', 0)}"
        )
        if s.get("new_findings"):
            say(f"      new findings: {', '.join(s['new_findings'])}")
        if not s.get("added") and not s.get("removed") and not s.get("severity_changed"):
            say("      no change")


def schedule_phase(env: dict[str, str], db: Any, worker: subprocess.Popen[bytes]) -> None:
    """A sweep schedule (every 15 s here, to keep the demo short) fires once; then it is paused."""
    from cli.main import main as cli

    infra = ["--tenant", TENANT, "--bootstrap", env["KAFKA_BOOTSTRAP"], "--topic-prefix", PREFIX]
    infra += ["--mongo-url", env["MONGO_URL"], "--db", env["STELLA_MONGO_DB"]]
    before = set(runs_snapshot(db))
    code = cli(["schedules", "create", "sweep", "--cron", "*/15 * * * * *", "--tz", "Europe/Berlin", *infra])
    if code != 0:
        raise SystemExit(f"demo: creating the schedule failed (exit {code})")
    runs = wait_for_runs(db, before, worker)
    cli(["schedules", "pause", "sweep", *infra])
    show("schedule 'sweep' (cron */15 s, Europe/Berlin, background sweep of every image) fired", runs[:1])
    doc = None
    for _ in range(40):
        doc = db.schedules.find_one({"_id": f"{TENANT}/sweep"})
        if doc and doc.get("status") == "paused":
            break
        time.sleep(0.5)
    if doc:
        say(
            f"  schedule sweep: {doc.get('status')}, fired {doc.get('fired_total')}, last {doc.get('last_fired')}"
        )


def verify_signed(bootstrap: str) -> str:
    from cli.main import main as cli

    code = cli(
        [
            "verify",
            "--topic",
            "--from-beginning",
            "--timeout",
            "5",
            "--public-keys",
            str(RUN / "keys"),
            "--bootstrap",
            bootstrap,
            "--topic-prefix",
            PREFIX,
        ]
    )
    return "all signed events verified" if code == 0 else f"verification FAILED (exit {code})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="stella-sched demo",
        description="Run the end-to-end demo on the real services (start them first: `make up`).",
    )
    parser.add_argument("--no-api", action="store_true", help="do not start the HTTP control plane")
    args = parser.parse_args(argv)
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    mongo = os.environ.get("MONGO_URL", "mongodb://127.0.0.1:27017/")
    RUN.mkdir(parents=True, exist_ok=True)
    stop_previous()

    from signing.keys import generate_keypair

    keys = RUN / "keys"
    keys.mkdir(exist_ok=True)
    if not (keys / "demo-signing.key").exists():
        generate_keypair(keys / "demo-signing.key", keys / "demo-signing.pub.json")

    say("demo: resetting the demo topics and database")
    asyncio.run(reset_topics(bootstrap))
    # The previous demos' local tables (rocksdb store): their app ids and changelogs are gone.
    shutil.rmtree(RUN / "demo-data", ignore_errors=True)
    # A fresh database per demo rather than dropping the last one: FerretDB's dropDatabase can wedge
    # the server while the previous demo's processes are still letting go of it.
    stamp = int(time.time())
    db_name = f"stella_demo_{stamp}"
    client: MongoClient[dict[str, Any]] = MongoClient(mongo)
    db = client[db_name]

    env = demo_env(bootstrap, mongo, f"stella-demo-{stamp}", db_name)
    worker = start("worker", ["agents.worker", "--web-port", str(WORKER_PORT)], env)
    token: str | None = None
    if not args.no_api:
        token = write_demo_access(ACCESS_FILE)  # before the API starts: it reads the file at start-up
        start("api", ["controlplane.server", "--port", str(API_PORT)], env)
    say(f"demo: worker started (pid {worker.pid}, log {RUN / 'demo-worker.log'})")

    phases: list[tuple[str, str, list[str], tuple[str, ...]]] = [
        (
            "",
            "sbom",
            [str(FEED / "sbom" / "cern-lhc-vdm-editor.json")],
            (
                "--tenant",
                TENANT,
                "--image-digest",
                CERN_DIGEST,
                "--repository",
                "registry.cern.example/vdm-editor",
            ),
        ),
        (
            "inventories: two images, first evaluation",
            "sbom",
            [str(FEED / "sbom" / "alpine-cyclonedx.json")],
            ("--tenant", TENANT),
        ),
        ("advisory deltas: GHSA and PyPA records", "osv", [str(FEED / "osv")], ()),
        ("VEX: minimist@0.0.8 is not affected by GHSA-vh95-rmgr-6w4m", "vex", [str(FEED / "vex")], ()),
        ("policy revision 2 activated (fail only on critical or KEV)", "policy", [str(FEED / "policy")], ()),
        (
            "runtime: vdm-editor starts running in prod (high priority)",
            "runtime",
            [str(FEED / "runtime")],
            (),
        ),
    ]
    for title, kind, paths, extra in phases:
        before = set(runs_snapshot(db))
        publish(env, kind, *paths, extra=extra)
        if not title:
            continue
        show(title, wait_for_runs(db, before, worker))
    schedule_phase(env, db, worker)

    say(f"\n{verify_signed(bootstrap)}")
    images = list(db.images.find({}, {"findings": 0}))
    for image in sorted(images, key=lambda d: d["_id"]):
        say(f"image {image['_id']}: verdict {image.get('verdict')}  counts {image.get('counts')}")
    say(
        "\nStill running (stop with `make down`):\n"
        f"  worker metrics  http://127.0.0.1:{WORKER_PORT}/metrics\n"
        f"  read models     STELLA_MONGO_DB={db_name} stella-sched query runs --tenant {TENANT}\n"
        f"  signed events   stella-sched tail --topic-prefix {PREFIX} --public-keys {keys}"
    )
    if token is not None:
        say(
            f"  control plane   http://127.0.0.1:{API_PORT}/api/v1/docs\n"
            f"  API token       {token}  (tenant {TENANT}, scopes {', '.join(SCOPES)}; access file {ACCESS_FILE})\n"
            f"  try             {curl_line(token)}\n"
            f"  console         {console_url()}  (sign in with the API token above)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
