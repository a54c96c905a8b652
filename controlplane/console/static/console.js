// stella-sched console: follows /api/v1/stream (Server-Sent Events) and updates the runs list and a run's
// page in place. Plain JavaScript, no library. Licence: Apache-2.0 (the project's).
"use strict";

(function () {
  const TERMINAL = new Set(["completed", "cancelled", "error"]);
  const runsTable = document.getElementById("runs");
  const runSection = document.getElementById("run");
  const status = document.getElementById("live-status");
  const live = (runsTable && runsTable.dataset.live === "on") || runSection;
  if (!live || typeof EventSource === "undefined") return;

  const since = (runsTable || runSection).dataset.sinceMs;
  // The page was rendered at since: start the feed a little before it (updates are idempotent).
  const url = "/api/v1/stream?since_ms=" + Math.max(0, Number(since) - 2000);
  const source = new EventSource(url);
  const say = (text) => { if (status) status.textContent = text; };
  source.addEventListener("ready", () => say("Live updates on."));
  source.onerror = () => say("Live updates interrupted; reconnecting…");

  function text(el, value) {
    if (el && el.textContent !== String(value)) el.textContent = String(value);
  }

  function setState(scope, state) {
    const el = scope.querySelector('[data-field="state"]');
    if (!el) return;
    text(el, state);
    el.className = "state state-" + state;
  }

  // A run event carries the run's whole state after a change: newer (by "at") wins.
  function applyRun(scope, run) {
    const seen = scope.dataset.at || "";
    if (seen && run.at < seen) return;
    scope.dataset.at = run.at;
    setState(scope, run.state);
    for (const key of ["jobs_done", "jobs_total", "jobs_failed", "jobs_skipped"]) {
      text(scope.querySelector('[data-field="' + key + '"]'), run[key]);
    }
    const summary = run.summary || {};
    text(scope.querySelector('[data-field="added"]'), summary.added || 0);
    text(scope.querySelector('[data-field="verdict_to_fail"]'), summary.verdict_to_fail || 0);
    text(scope.querySelector('[data-field="verdict_to_pass"]'), summary.verdict_to_pass || 0);
    text(scope.querySelector('[data-field="updated_at"]'), run.at);
  }

  function cell(tag, child) {
    const el = document.createElement(tag);
    if (typeof child === "string") el.textContent = child; else if (child) el.appendChild(child);
    return el;
  }

  function span(field, value) {
    const el = document.createElement("span");
    el.dataset.field = field;
    el.textContent = String(value);
    return el;
  }

  function newRunRow(run) {
    const tr = document.createElement("tr");
    tr.dataset.runId = run.run_id;
    const link = document.createElement("a");
    link.href = "/console/runs/" + encodeURIComponent(run.run_id);
    const code = document.createElement("code");
    code.textContent = run.run_id.length > 13 ? run.run_id.slice(0, 12) + "…" : run.run_id;
    link.appendChild(code);
    const th = cell("th", link);
    th.scope = "row";
    tr.appendChild(th);
    const state = span("state", run.state);
    state.className = "state state-" + run.state;
    tr.appendChild(cell("td", state));
    // A schedule's run is only known as one from the read models: the next page load names it.
    tr.appendChild(cell("td", run.retry_of ? "retry" : "new"));
    const time = document.createElement("time");
    time.textContent = run.at;
    tr.appendChild(cell("td", time));
    const jobs = cell("td", span("jobs_done", run.jobs_done));
    jobs.appendChild(document.createTextNode(" / "));
    jobs.appendChild(span("jobs_total", run.jobs_total));
    tr.appendChild(jobs);
    const failed = cell("td", String(run.jobs_failed));
    failed.dataset.field = "jobs_failed";
    tr.appendChild(failed);
    const added = cell("td", "0");
    added.dataset.field = "added";
    tr.appendChild(added);
    const verdicts = cell("td", span("verdict_to_fail", 0));
    verdicts.appendChild(document.createTextNode(" / "));
    verdicts.appendChild(span("verdict_to_pass", 0));
    tr.appendChild(verdicts);
    return tr;
  }

  source.addEventListener("run", (event) => {
    const run = JSON.parse(event.data);
    if (runsTable) {
      let row = runsTable.querySelector('tr[data-run-id="' + CSS.escape(run.run_id) + '"]');
      if (!row) {
        row = newRunRow(run);
        runsTable.tBodies[0].insertBefore(row, runsTable.tBodies[0].firstChild);
        const empty = document.getElementById("no-runs");
        if (empty) empty.remove();
      }
      applyRun(row, run);
    }
    if (runSection && runSection.dataset.runId === run.run_id) {
      applyRun(runSection, run);
      const summary = run.summary || {};
      for (const el of document.querySelectorAll("[data-summary]")) {
        const value = summary[el.dataset.summary];
        if (Array.isArray(value)) text(el, value.join(", ") || "none");
        else if (value !== undefined) text(el, value);
      }
      if (TERMINAL.has(run.state)) say("Run " + run.state + ". Reload for its findings and buttons.");
    }
  });

  source.addEventListener("job", (event) => {
    const job = JSON.parse(event.data);
    if (!runSection || runSection.dataset.runId !== job.run_id) return;
    const row = document.querySelector('#jobs tr[data-job-id="' + CSS.escape(job.job_id) + '"]');
    if (!row) { say("New jobs in this run: reload to see them."); return; }
    setState(row, job.status);
    text(row.querySelector('[data-field="attempts"]'), job.attempts);
    text(row.querySelector('[data-field="added"]'), job.added);
    text(row.querySelector('[data-field="removed"]'), job.removed);
    text(row.querySelector('[data-field="changed"]'), job.changed);
    const verdict = row.querySelector('[data-field="verdict"]');
    if (verdict && job.verdict) {
      const prev = job.previous_verdict && job.previous_verdict !== job.verdict ? job.previous_verdict + " → " : "";
      text(verdict, prev + job.verdict);
    }
  });
})();
