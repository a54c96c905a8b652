"""The runs console on the real stack (issue 19): a worker process, the control plane in this process, and a
real headless Chromium (Debian's chromium + chromium-driver, `make chromium`) driven by Selenium.

One deployment for the module (its executor is a scripted HTTP engine, so a test can hold jobs in flight):
* the live feed resumes with Last-Event-ID after a disconnect mid-stream with no gap and no duplicate, and a
  tenant's stream carries none of another tenant's events;
* in the browser: sign in, see the runs; publish an advisory and watch its run appear and complete without a
  reload; open the run, its image and its signed evidence; cancel a run whose jobs are queued; pause a
  schedule; see a dead letter; a second tenant's token sees none of the first's runs.
Screenshots of every page, at 1280 px and at phone width, go to run/screenshots/.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import orjson
import pytest

from cli.main import main as cli_main
from controlplane.app import create_app
from controlplane.config import ApiConfig
from controlplane.testing import ServerThread
from tests.integration.executor_kit import ScriptedEngine, digest, http_env, scripted_engine
from tests.integration.executor_kit import inventory as small_inventory
from tests.integration.kit import REPO, end_offsets, produce, read_all
from tests.integration.pipeline_kit import CERN_A, Pipeline, advisories, inventories, later
from tests.integration.test_api_e2e import public_keys, start_pipeline

pytestmark = [pytest.mark.integration, pytest.mark.browser]

T = TypeVar("T")
SCOPES = ["scheduler.runs.read", "scheduler.runs.write", "scheduler.runs.manage"]
ACME, BETA = "console-acme-token", "console-beta-token"
SHOTS = REPO / "run" / "screenshots"
WIDE, PHONE = (1280, 900), (390, 844)


@dataclass
class Console:
    pipe: Pipeline
    engine: ScriptedEngine
    url: str

    def api(self, token: str = ACME) -> httpx.Client:
        # read timeout well above the feed's 10 s keepalive, for a busy machine
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=120)


def eventually(what: str, probe: Callable[[], T | None], pipe: Pipeline, timeout: float = 240.0) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pipe.alive()
        got = probe()
        if got is not None:
            return got
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}\n" + "\n".join(w.report() for w in pipe.workers))


def access_file(home: Path) -> Path:
    path = home / "console-access.json"
    tokens = [
        {
            "token_sha256": hashlib.sha256(t.encode()).hexdigest(),
            "tenant": tenant,
            "scopes": SCOPES,
            "name": tenant,
        }
        for t, tenant in ((ACME, "acme"), (BETA, "beta"))
    ]
    path.write_text(json.dumps({"tokens": tokens}))
    return path


@contextmanager
def serve(pipe: Pipeline) -> Iterator[str]:
    settings = pipe.api_settings(public_keys=str(public_keys(pipe)))
    config = ApiConfig.from_env(settings, tokens_path=str(access_file(pipe.home)), port=0)
    with ServerThread(create_app(settings, config=config)) as server:
        yield server.url


@pytest.fixture(scope="module")
def console(
    kafka_bootstrap: str, mongo_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Console]:
    """The demo's first two phases (SBOMs, then GHSA advisories), settled, evaluated one job at a time by a
    scripted engine whose gate a test may close to hold jobs in flight."""
    with scripted_engine() as engine:
        env = http_env(engine, STELLA_EXECUTOR_CONCURRENCY="1", STELLA_EXECUTOR_TIMEOUT_SECONDS="120")
        pipe = start_pipeline(kafka_bootstrap, mongo_url, tmp_path_factory.mktemp("console"), env)
        try:
            asyncio.run(pipe.publish(inventories()))
            # generous bounds: the machine running the suite may be busy (settle waits on conditions)
            asyncio.run(pipe.settle(timeout=300.0, min_jobs=3))
            asyncio.run(pipe.publish(advisories(later(60))))
            asyncio.run(pipe.settle(timeout=300.0, min_jobs=4))
            with serve(pipe) as url:
                yield Console(pipe, engine, url)
        finally:
            pipe.stop()


# ---------------------------------------------------------------- the live feed over HTTP


def sse_events(
    lines: Iterator[str], count: int, until_quiet: bool = False
) -> tuple[list[dict[str, Any]], bool]:
    """Read ``count`` data events (id, event, data) from an SSE line iterator; with ``until_quiet`` keep
    reading up to the next keepalive and report whether any further data event came first."""
    out: list[dict[str, Any]] = []
    frame: dict[str, Any] = {}
    extra = False
    # The feed sends a keepalive at least every 10 s, so this bound is checked even while nothing comes.
    deadline = time.monotonic() + 240.0
    for line in lines:
        assert time.monotonic() < deadline, f"{len(out)} of {count} events within 240 s: {out[-3:]}"
        if line.startswith(":"):
            if until_quiet and len(out) >= count:
                return out, extra
            continue
        if line == "":
            if frame.get("event") not in (None, "ready"):
                if len(out) >= count:
                    extra = True
                    return out, extra
                out.append(frame)
                if len(out) >= count and not until_quiet:
                    return out, extra
            frame = {}
            continue
        name, _, value = line.partition(": ")
        frame[name] = orjson.loads(value) if name == "data" else value
    return out, extra


def tenant_records(pipe: Pipeline, tenant: str) -> int:
    """How many records of the feed's topics are the tenant's (every record up to the end offsets is read,
    however slowly the broker hands them over)."""
    total = 0
    for logical in ("run-events", "job-results"):
        name = f"{pipe.prefix}{logical}"
        count = sum(asyncio.run(end_offsets(pipe.bootstrap, [name])).values())
        records = asyncio.run(read_all(pipe.bootstrap, name, expect=count, timeout=120.0))
        assert len(records) >= count
        total += sum(1 for r in records if orjson.loads(r.value).get("tenant") == tenant)
    return total


def test_stream_resumes_with_last_event_id_without_gap_or_duplicate(console: Console) -> None:
    pipe = console.pipe
    expected = tenant_records(pipe, "acme")
    assert expected >= 4
    with console.api() as http:
        # Uninterrupted, from the start of the topics ("0:" is the empty cursor).
        with http.stream("GET", "/api/v1/stream", params={"from": "0:"}) as resp:
            assert resp.status_code == 200
            assert resp.headers["content-type"].startswith("text/event-stream")
            whole, extra = sse_events(resp.iter_lines(), expected, until_quiet=True)
        assert not extra
        assert len(whole) == expected
        assert all(e["data"]["tenant" if e["event"] == "run" else "run_id"] for e in whole)
        seqs = [int(e["id"].split(":")[0]) for e in whole]
        assert seqs == sorted(seqs)
        assert len(set(seqs)) == len(seqs)
        # Disconnect mid-stream after k events, then resume with Last-Event-ID.
        k = expected // 2
        with http.stream("GET", "/api/v1/stream", params={"from": "0:"}) as resp:
            first, _ = sse_events(resp.iter_lines(), k)
        assert first == whole[:k]
        headers = {"Last-Event-ID": first[-1]["id"]}
        with http.stream("GET", "/api/v1/stream", headers=headers) as resp:
            rest, extra = sse_events(resp.iter_lines(), expected - k, until_quiet=True)
        assert not extra  # nothing after the last one: no duplicate
        assert first + rest == whole  # same events, same ids, same order: no gap
    # The other tenant's stream holds only its own events.
    with console.api(BETA) as http, http.stream("GET", "/api/v1/stream", params={"from": "0:"}) as resp:
        beta, extra = sse_events(resp.iter_lines(), tenant_records(pipe, "beta"), until_quiet=True)
    assert not extra
    acme_runs = {e["data"]["run_id"] for e in whole}
    assert beta
    assert not acme_runs & {e["data"]["run_id"] for e in beta}
    assert {e["data"].get("tenant", "beta") for e in beta} == {"beta"}


# ---------------------------------------------------------------- the browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    missing = "headless Chromium is missing: `make chromium` installs chromium + chromium-driver"
    assert binary, missing
    assert driver_path, missing
    options = Options()
    options.binary_location = binary
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={WIDE[0]},{WIDE[1]}",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


class Page:
    def __init__(self, driver: Any, base: str, pipe: Pipeline) -> None:
        self.d = driver
        self.base = base
        self.pipe = pipe

    def go(self, path: str) -> None:
        self.d.get(self.base + path)

    def find(self, css: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.d.find_element(By.CSS_SELECTOR, css)

    def all(self, css: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        return list(self.d.find_elements(By.CSS_SELECTOR, css))

    def wait(self, what: str, probe: Callable[[], T | None], timeout: float = 240.0) -> T:
        return eventually(what, probe, self.pipe, timeout)

    def wait_projected(self, what: str, probe: Callable[[], T | None], timeout: float = 120.0) -> T:
        """`wait`, reloading the page between probes. Pages are rendered from the read models, which follow
        the topics the live feed reads: what the feed has shown reaches them a moment later."""

        def reloaded() -> T | None:
            got = probe()
            if got is None:
                self.d.refresh()
            return got

        return self.wait(what, reloaded, timeout)

    def shoot(self, name: str) -> None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        for label, (w, h) in (("1280", WIDE), ("phone", PHONE)):
            self.d.set_window_size(w, h)
            width = self.d.execute_script("return document.documentElement.clientWidth")
            assert width <= w
            if label == "phone":
                # readable on a phone: the page itself does not scroll sideways (wide tables scroll in place)
                scroll = self.d.execute_script("return document.documentElement.scrollWidth")
                assert scroll <= width + 1, f"{name}: the page is {scroll}px wide at {w}px"
            assert self.d.save_screenshot(str(SHOTS / f"{name}-{label}.png"))
        self.d.set_window_size(*WIDE)

    def login(self, token: str) -> None:
        self.go("/console/login")
        field = self.find("#token")
        field.send_keys(token)
        self.find("form.login button[type=submit]").click()
        self.wait("the runs page", lambda: True if self.d.current_url.endswith("/console/runs") else None, 30)

    def run_rows(self) -> dict[str, str]:
        return {
            row.get_attribute("data-run-id"): row.find_element("css selector", '[data-field="state"]').text
            for row in self.all("#runs tbody tr")
        }

    def click_button(self, label: str) -> None:
        from selenium.webdriver.common.by import By

        self.d.find_element(By.XPATH, f"//button[normalize-space()='{label}']").click()


def test_the_console_in_a_real_browser(console: Console, browser: Any) -> None:
    pipe, engine = console.pipe, console.engine
    page = Page(browser, console.url, pipe)

    # A tenant-attributable dead letter for the dead-letters page: a runtime event with a broken digest.
    bad = orjson.dumps({"schema": "scheduler.runtime@1", "tenant": "acme", "image_digest": "sha256:nope", "cluster": "eu-1", "namespace": "p",
                        "state": "running", "observed_at": "2026-01-05T12:05:00Z"})  # fmt: skip
    asyncio.run(produce(pipe.bootstrap, f"{pipe.prefix}runtime", [(b"sha256:nope", bad)]))
    # A schedule for the schedules page.
    with console.api() as http:
        spec = {"cron": "30 2 * * *", "timezone": "Europe/Berlin", "name": "nightly sweep"}
        assert (
            http.post("/api/v1/schedules", json={"schedule_id": "nightly", "spec": spec}).status_code == 202
        )

    # Sign in (keyboard only: type the token, press Enter) and see the runs.
    page.go("/console/runs")
    assert "/console/login" in browser.current_url
    from selenium.webdriver.common.keys import Keys

    page.find("#token").send_keys(ACME, Keys.ENTER)
    page.wait("the runs page", lambda: True if browser.current_url.endswith("/console/runs") else None, 30)
    before = page.run_rows()
    assert len(before) >= 2, before
    assert set(before.values()) <= {"completed"}
    assert page.find("#tenant").text == "acme"
    page.wait(
        "the live feed", lambda: True if "Live updates on" in page.find("#live-status").text else None, 60
    )
    # Keyboard: the first Tab reaches the skip link, with a visible focus ring; the filters are labelled.
    page.find("body").send_keys(Keys.TAB)
    focused = browser.switch_to.active_element
    assert focused.get_attribute("class") == "skip"
    assert browser.execute_script("return getComputedStyle(document.activeElement).outlineStyle") == "solid"
    for field in page.all("form.filters select, form.filters input"):
        assert page.all(f'label[for="{field.get_attribute("id")}"]'), field.get_attribute("name")
    page.shoot("runs")

    # Publish an advisory: its run appears in the open page and reaches completed, without a reload.
    marker = browser.execute_script("window.__notReloaded = true; return window.__notReloaded")
    assert marker is True
    published = time.monotonic()
    asyncio.run(pipe.publish(advisories(later(600))))
    new_run = page.wait(
        "the advisory's run to appear and complete in the open page",
        lambda: next((r for r, s in page.run_rows().items() if r not in before and s == "completed"), None),
    )
    print(
        f"console: advisory published -> its run shown completed in the open page: {time.monotonic() - published:.1f} s"
    )
    assert browser.execute_script("return window.__notReloaded") is True  # same document: no reload
    assert page.all("#runs tbody tr")[0].get_attribute("data-run-id") == new_run  # newest first
    page.shoot("runs-live")

    # The run's page: jobs, DeltaSummary, findings; then its image and its signed evidence.
    page.find(f'#runs tr[data-run-id="{new_run}"] a').click()
    page.wait_projected("the run page with its jobs", lambda: True if page.all("#jobs tbody tr") else None)
    assert page.find('#run [data-field="state"]').text == "completed"
    assert "DeltaSummary" in browser.page_source
    assert page.all("button")
    assert "Retry run" in browser.page_source
    page.shoot("run")
    page.find("#jobs tbody tr th a").click()
    page.wait("the image page", lambda: True if "/console/images/" in browser.current_url else None, 30)
    assert "Runs of this image" in browser.page_source
    page.shoot("image")

    def verified() -> bool | None:
        page.go(f"/console/evidence?subject={new_run}")
        return True if "verified with key" in browser.page_source else None

    page.wait("the run's signed evidence", verified, 120)
    assert "not verified" not in browser.page_source
    link = page.find("a[download]").get_attribute("href")
    with httpx.Client(cookies={"stella_console": ACME}, timeout=30) as http:
        envelope = http.get(link)
    assert envelope.status_code == 200
    assert set(envelope.json()) == {"payloadType", "payload", "signatures"}
    # ... and it verifies offline, as downloaded: `stella-sched verify --file`.
    saved = pipe.home / "downloaded-envelope.json"
    saved.write_bytes(envelope.content)
    assert cli_main(["verify", "--file", str(saved), "--public-keys", str(pipe.home / "pub")]) == 0
    page.shoot("evidence")

    # Cancel a run while its jobs are held: the open page follows it to cancelled.
    engine.gate.clear()
    try:
        asyncio.run(pipe.publish([small_inventory("acme", digest(n), later(900)) for n in (31, 32, 33)]))
        page.go("/console/runs")
        page.wait(
            "the live feed", lambda: True if "Live updates on" in page.find("#live-status").text else None, 60
        )

        def held() -> str | None:
            if not any(engine.arrivals_for(digest(n)) for n in (31, 32, 33)):
                return None
            with console.api() as http:
                runs = http.get("/api/v1/runs", params={"order": "desc", "limit": 20}).json()["items"]
            live = [r for r in runs if r["state"] in ("queued", "running") and r["jobs_total"] == 3]
            return str(live[0]["id"]) if live else None

        held_run = page.wait("a run with a job in flight", held)
        page.wait("the held run in the list", lambda: True if held_run in page.run_rows() else None, 60)
        page.go(f"/console/runs/{held_run}")
        page.click_button("Cancel run")
        clicked = time.monotonic()
        page.wait("the cancel notice", lambda: True if page.all(".notice") else None, 30)
        assert "Cancel requested" in page.find(".notice").text
    finally:
        engine.gate.set()
    page.wait(
        "the run to be cancelled in the open page",
        lambda: True if page.find('#run [data-field="state"]').text == "cancelled" else None,
    )
    print(f"console: cancel clicked -> the open run page shows cancelled: {time.monotonic() - clicked:.1f} s")

    def skipped() -> list[str] | None:
        states = [e.text for e in page.all('#jobs tbody [data-field="state"]')]
        return states if "skipped" in states else None

    page.wait_projected("the cancelled run's skipped jobs on its page", skipped)
    page.shoot("run-cancelled")

    # Schedules: next fire times and preview counts; pause it.
    page.wait(
        "the schedule",
        lambda: (page.go("/console/schedules"), page.all("[data-schedule-id=nightly]"))[1] or None,
        120,
    )
    assert "Next fire times" in browser.page_source
    page.shoot("schedules")
    page.click_button("Pause")
    page.wait("the pause notice", lambda: True if page.all(".notice") else None, 30)

    def paused() -> bool | None:
        page.go("/console/schedules")
        return True if "Resume" in browser.page_source else None

    page.wait("the schedule to be paused", paused, 120)

    # Dead letters: reason and source position.
    def dead_letter() -> bool | None:
        page.go("/console/deadletters")
        source = browser.page_source
        return True if f"{pipe.prefix}runtime 0@0" in source and "validate" in source else None

    page.wait("the dead letter", dead_letter, 120)
    page.shoot("deadletters")
    page.click_button("Replay")
    page.wait("the replay notice", lambda: True if page.all(".notice") else None, 30)
    assert f"Replayed to {pipe.prefix}runtime" in page.find(".notice").text

    # Another tenant's token sees none of it.
    page.click_button("Sign out")
    page.wait("the login page", lambda: True if "/console/login" in browser.current_url else None, 30)
    page.shoot("login")
    page.login(BETA)
    beta_runs = page.run_rows()
    assert beta_runs
    assert not set(beta_runs) & ({new_run, held_run} | set(before))
    assert page.find("#tenant").text == "beta"
    page.go(f"/console/runs/{new_run}")
    assert "not_found" in browser.page_source
    page.go(f"/console/images/{CERN_A}")
    assert "not_found" in browser.page_source
    page.go("/console/deadletters")
    assert "sha256:nope" not in browser.page_source
    assert "validate" not in browser.page_source
    page.go(f"/console/evidence?subject={new_run}")
    assert "verified with key" not in browser.page_source
    page.shoot("beta-runs")
