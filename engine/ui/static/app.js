// joblog's dashboard: pages on the REST API (/api/v1), live through server-sent events.
// Routes: #/jobs, #/submissions, #/submission/<sid>, #/job/<sid>/<jid>, #/workers,
// #/analytics. No build step: plain modules served by `joblog ui`.

import { ApiError, call, get, query, setToken, stream, token } from "./api.js";
import { STATUSES, bars, color, columns, dag, gantt } from "./draw.js";

const main = document.getElementById("main");
let cleanup = [];   // what the current page must close when another is shown

// ------------------------------------------------------------------ small helpers

function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const badge = (status) => h("span", { class: "status", style: `background:${color(status)}`,
  "data-status": status }, status || "");
const time = (iso) => (iso ? new Date(iso).toISOString().replace("T", " ").slice(0, 23) : "");
const secs = (value) => (value === null || value === undefined ? "" : `${Number(value).toFixed(2)} s`);
const jobLink = (sid, jid) => h("a", { href: `#/job/${encodeURIComponent(sid)}/${encodeURIComponent(jid)}` }, jid);
const subLink = (sid) => h("a", { href: `#/submission/${encodeURIComponent(sid)}` }, sid);

function toast(text) {
  const box = document.getElementById("toast");
  box.textContent = text;
  box.style.display = "block";
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { box.style.display = "none"; }, 5000);
}

function failure(error) {
  if (error instanceof ApiError && error.status === 401) { askToken(); return; }
  main.replaceChildren(h("div", { class: "card banner" }, `Error: ${error.message}`));
}

function table(rows, columnsSpec) {
  return h("table", {},
    h("thead", {}, h("tr", {}, columnsSpec.map(([title]) => h("th", {}, title)))),
    h("tbody", {}, rows.map((row) => h("tr", {},
      columnsSpec.map(([, value]) => h("td", {}, value(row)))))));
}

function plainTable(rows) {
  if (!rows.length) return h("p", { class: "muted" }, "no rows");
  const keys = Object.keys(rows[0]);
  return table(rows, keys.map((key) => [key, (row) => {
    const v = row[key];
    return v !== null && typeof v === "object" ? JSON.stringify(v) : v ?? "";
  }]));
}

// The scheduler's decision on a command, shown where it was asked.
function showDecision(box, answer) {
  box.className = "decision " + (answer.accepted ? "ok" : answer.decided ? "no" : "wait");
  box.id = "decision";
  box.setAttribute("data-accepted", String(answer.accepted));
  box.textContent = answer.accepted
    ? `${answer.command} accepted: ${answer.event ? answer.event.description : ""}`
    : answer.decided
      ? `${answer.command} rejected (${answer.code}): ${answer.reason}`
      : `${answer.command} sent; ${answer.reason || "no decision yet"}`;
}

async function command(box, method, path, body) {
  box.className = "decision wait";
  box.textContent = "waiting for the scheduler's decision…";
  try {
    showDecision(box, await call(method, path, body, { decision: true }));
  } catch (error) {
    box.className = "decision no";
    box.textContent = error.message;
  }
}

function askToken() {
  const input = h("input", { type: "password", size: 40, placeholder: "token" });
  main.replaceChildren(h("div", { class: "card" },
    h("h1", {}, "Token needed"),
    h("p", {}, "joblog ui prints the dashboard's URL with its token; or paste JOBLOG_UI_TOKEN here."),
    h("form", { onsubmit: (e) => { e.preventDefault(); setToken(input.value); route(); } },
      input, " ", h("button", { type: "submit" }, "Open"))));
}

// ------------------------------------------------------------------ jobs

const jobsState = { filters: {}, sort: "submitted_at", order: "desc", cursors: [""], page: 0 };

async function jobsPage() {
  const counts = h("div", { class: "counts", id: "counts" });
  const form = h("form", { class: "filters" });
  const f = jobsState.filters;
  const field = (name, label, attrs = {}) => h("label", {}, label,
    h("input", { name, value: f[name] || "", ...attrs }));
  const statusSelect = h("select", { name: "status", multiple: true, size: 3 },
    STATUSES.map((s) => h("option", { value: s, selected: (f.status || []).includes(s) }, s)));
  form.append(
    h("label", {}, "status", statusSelect),
    field("task", "task"), field("queue", "queue"), field("submission_id", "submission"),
    field("label", "label (key=value)"), field("q", "search"),
    field("submitted_after", "submitted after", { type: "datetime-local" }),
    field("submitted_before", "submitted before", { type: "datetime-local" }),
    h("button", { type: "submit" }, "Filter"),
    h("button", { type: "button", onclick: () => { jobsState.filters = {}; restart(); } }, "Clear"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const data = new FormData(form);
    jobsState.filters = {
      status: data.getAll("status"),
      ...Object.fromEntries(["task", "queue", "submission_id", "label", "q"].map((k) => [k, data.get(k)])),
      submitted_after: data.get("submitted_after") ? new Date(data.get("submitted_after")).toISOString() : "",
      submitted_before: data.get("submitted_before") ? new Date(data.get("submitted_before")).toISOString() : "",
    };
    restart();
  });
  const body = h("div", { class: "card", id: "jobs-table" });
  main.replaceChildren(h("h1", {}, "Jobs"), counts, form, body);

  const params = () => ({ ...jobsState.filters });
  let live = {};
  const drawCounts = () => {
    counts.replaceChildren(...STATUSES.map((s) => h("span", { class: "count", "data-count": s,
      onclick: () => { jobsState.filters = { ...jobsState.filters, status: [s] }; restart(); } },
    badge(s), h("b", {}, String(live[s] || 0)))));
  };
  const loadCounts = async () => {
    live = (await get(`/api/v1/jobs/counts${query(params())}`)).counts;
    drawCounts();
  };
  let rowsShown = new Map();
  const loadPage = async () => {
    const p = { ...params(), sort: jobsState.sort, order: jobsState.order, limit: 25,
      cursor: jobsState.cursors[jobsState.page] };
    const page = await get(`/api/v1/jobs${query(p)}`);
    const header = (title, key) => h("th", {
      class: `sortable ${jobsState.sort === key ? "sorted" : ""} ${jobsState.order === "asc" ? "asc" : ""}`,
      onclick: () => {
        jobsState.order = jobsState.sort === key && jobsState.order === "desc" ? "asc" : "desc";
        jobsState.sort = key; jobsState.cursors = [""]; jobsState.page = 0; loadPage().catch(failure);
      } }, title);
    rowsShown = new Map();
    const rows = page.jobs.map((job) => {
      const cell = h("td", {}, badge(job.status));
      rowsShown.set(`${job.submission_id}/${job.job_id}`, cell);
      return h("tr", {},
        h("td", {}, jobLink(job.submission_id, job.job_id)),
        h("td", {}, subLink(job.submission_id)),
        h("td", {}, job.task || job.command || job.name),
        h("td", {}, job.queue), cell,
        h("td", { class: "num" }, job.attempts),
        h("td", {}, time(job.submitted_at)), h("td", {}, time(job.finished_at)),
        h("td", { class: "num" }, secs(job.execution_duration)),
        h("td", {}, job.error_type ? `${job.error_type}: ${job.error_note || ""}`.slice(0, 80) : ""));
    });
    body.replaceChildren(
      h("table", {}, h("thead", {}, h("tr", {},
        header("job", "job_id"), header("submission", "submission_id"), header("task", "task"),
        header("queue", "queue"), header("status", "status"), header("tries", "attempts"),
        header("submitted", "submitted_at"), header("finished", "finished_at"),
        header("ran", "execution_duration"), h("th", {}, "error"))),
      h("tbody", {}, rows)),
      h("div", { class: "pager" },
        h("button", { disabled: jobsState.page === 0, onclick: () => { jobsState.page -= 1; loadPage().catch(failure); } }, "‹ prev"),
        `page ${jobsState.page + 1} of ${Math.max(1, Math.ceil(page.total / 25))} · ${page.total} job(s)`,
        h("button", { disabled: !page.next, onclick: () => {
          jobsState.cursors[jobsState.page + 1] = page.next; jobsState.page += 1; loadPage().catch(failure);
        } }, "next ›")));
  };
  const restart = () => { jobsState.cursors = [""]; jobsState.page = 0; jobsPage().catch(failure); };
  await Promise.all([loadCounts(), loadPage()]);

  // Live counts: every status change moves one job from its previous status to the new one;
  // a change whose previous status this server did not see, or a resync, asks again.
  const filtered = Object.values(jobsState.filters).some((v) => (Array.isArray(v) ? v.length : v));
  let resync = null;
  const later = () => { clearTimeout(resync); resync = setTimeout(() => loadCounts().catch(() => {}), 1500); };
  const source = stream("/api/v1/events", {
    live: () => document.getElementById("live-dot").classList.add("on"),
    change: (c) => {
      const cell = rowsShown.get(`${c.submission_id}/${c.job_id}`);
      if (cell && c.status) cell.replaceChildren(badge(c.status));
      if (!c.status) return;
      if (filtered) { later(); return; }
      if (c.event === "JobSubmitted") live.SUBMITTED = (live.SUBMITTED || 0) + 1;
      else if (c.previous) { live[c.previous] = Math.max(0, (live[c.previous] || 0) - 1); }
      else { later(); }
      if (c.event !== "JobSubmitted") live[c.status] = (live[c.status] || 0) + 1;
      drawCounts();
    },
    resync: later,
  });
  source.onerror = () => document.getElementById("live-dot").classList.remove("on");
  cleanup.push(() => { source.close(); clearTimeout(resync); });
}

// ------------------------------------------------------------------ submissions

async function submissionsPage() {
  const list = h("div", { class: "card" });
  const text = h("textarea", { rows: 8, cols: 80, id: "submit-json" },
    JSON.stringify({ jobs: [{ id: "hello", command: ["sh", "-c", "echo hello"] }] }, null, 2));
  const box = h("div");
  main.replaceChildren(h("h1", {}, "Submissions"), list,
    h("div", { class: "card" }, h("h2", {}, "Submit (JSON: jobs, labels)"), text, h("br"),
      h("button", { id: "submit-button", onclick: async () => {
        let body;
        try { body = JSON.parse(text.value); } catch (e) { box.className = "decision no"; box.textContent = `not JSON: ${e.message}`; return; }
        await command(box, "POST", "/api/v1/submissions", body);
      } }, "Submit"), box));
  const page = await get("/api/v1/submissions?limit=50");
  list.replaceChildren(table(page.submissions, [
    ["submission", (s) => subLink(s.submission_id)],
    ["jobs", (s) => s.jobs], ["outcome", (s) => (s.outcome ? badge(s.outcome) : "running")],
    ["completed", (s) => s.completed], ["failed", (s) => s.failed],
    ["submitted", (s) => time(s.submitted_at)], ["wall", (s) => secs(s.wall_time)],
    ["by", (s) => s.submitted_by],
  ]), h("p", { class: "muted" }, `${page.total} submission(s), newest first`));
}

// ------------------------------------------------------------------ one submission

async function submissionPage(sid) {
  const head = h("div", { class: "card", id: "sub-head" });
  const dagBox = h("div", { class: "card", id: "dag-box" });
  const ganttBox = h("div", { class: "card" });
  const jobsBox = h("div", { class: "card", id: "sub-jobs" });
  const decision = h("div");
  const slider = h("input", { type: "range", id: "timeslider", min: 1, max: 1, value: 1, style: "width:60%" });
  const sliderText = h("span", { id: "asof-text", class: "muted" });
  const banner = h("div", { id: "asof-banner", class: "banner", style: "display:none" });
  const mode = h("select", { id: "cancel-mode" }, h("option", { value: "kill" }, "kill running jobs"),
    h("option", { value: "finish" }, "let running jobs finish"));
  const force = h("input", { type: "checkbox", id: "delete-force" });
  main.replaceChildren(
    h("h1", {}, "Submission ", h("span", { id: "sid" }, sid)),
    head,
    h("div", { class: "card actions" },
      h("button", { class: "danger", id: "cancel-submission", onclick: () =>
        command(decision, "POST", `/api/v1/submissions/${encodeURIComponent(sid)}/cancel`, { mode: mode.value, reason: "canceled from the dashboard" }) }, "Cancel all"),
      mode,
      h("button", { class: "danger", onclick: () =>
        command(decision, "DELETE", `/api/v1/submissions/${encodeURIComponent(sid)}${force.checked ? "?force=true" : ""}`) }, "Delete"),
      h("label", {}, force, " force"), decision),
    h("div", { class: "card" }, h("h2", {}, "Time travel"), slider, " ", sliderText,
      h("button", { id: "back-to-live", onclick: () => { asOf = null; banner.style.display = "none"; draw(); } }, "Back to live"),
      banner),
    h("div", { class: "grid" }, h("div", {}, h("h2", {}, "Graph"), dagBox),
      h("div", {}, h("h2", {}, "Timeline"), ganttBox)),
    h("h2", {}, "Jobs"), jobsBox);

  const jobs = new Map();       // job id -> job view, folded live from the events
  let attempts = [];
  let outcome = null;
  let lastSeq = 0, firstTime = null;
  let asOf = null;              // the folded past state while the slider is off the end
  let pending = false;

  try {
    const row = await get(`/api/v1/submissions/${encodeURIComponent(sid)}`);
    attempts = row.attempt_rows;
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 404)) throw error;
  }

  const draw = () => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => { pending = false; render(); });
  };
  const jobAction = (job, action) => {
    const base = `/api/v1/jobs/${encodeURIComponent(sid)}/${encodeURIComponent(job.job_id)}`;
    if (action === "cancel") return command(decision, "POST", `${base}/cancel`, { mode: mode.value, reason: "canceled from the dashboard" });
    if (action === "retry") return command(decision, "POST", `${base}/retry`);
    return command(decision, "DELETE", `${base}${force.checked ? "?force=true" : ""}`);
  };
  const render = () => {
    const shown = asOf ? asOf.jobs : [...jobs.values()];
    const counts = {};
    shown.forEach((job) => { counts[job.status] = (counts[job.status] || 0) + 1; });
    const done = shown.filter((j) => /COMPLETED|FAILED|CANCELED|SKIPPED|ABANDONED/.test(j.status)).length;
    const state = asOf ? (asOf.outcome || "as of the past") : outcome || (shown.length ? "RUNNING" : "waiting for events");
    head.replaceChildren(
      h("div", {}, "status: ", h("b", { id: "sub-status", "data-status": state }, state),
        ` · ${done}/${shown.length} done · `,
        Object.entries(counts).map(([s, n]) => h("span", {}, badge(s), ` ${n} `))),
      h("div", { class: "bar", style: "margin-top:6px" },
        h("div", { style: `width:${shown.length ? (100 * done) / shown.length : 0}%;background:${color("COMPLETED")}` })));
    dagBox.replaceChildren(dag(shown, { onClick: (job) => { location.hash = `#/job/${encodeURIComponent(sid)}/${encodeURIComponent(job.job_id)}`; } }));
    ganttBox.replaceChildren(gantt(shown, attempts));
    jobsBox.replaceChildren(table(shown, [
      ["job", (j) => jobLink(sid, j.job_id)], ["status", (j) => badge(j.status)],
      ["attempt", (j) => `${j.attempt}/${j.max_attempts}`],
      ["progress", (j) => {
        const f = j.fraction ?? (j.total ? j.progress / j.total : null);
        return f === null || f === undefined ? "" : h("div", { class: "bar", "data-progress": j.job_id }, h("div", { style: `width:${Math.round(100 * f)}%` }));
      }],
      ["status line", (j) => j.status_line || ""],
      ["error / result", (j) => (j.error_type || j.error_note ? `${j.error_type} ${j.error_note}`.trim() : j.result ?? "")],
      ["", (j) => (asOf ? "" : h("span", { class: "actions" },
        h("button", { "data-action": "cancel-job", "data-job": j.job_id, onclick: () => jobAction(j, "cancel") }, "cancel"),
        h("button", { "data-action": "retry-job", "data-job": j.job_id, onclick: () => jobAction(j, "retry") }, "retry"),
        h("button", { "data-action": "delete-job", "data-job": j.job_id, onclick: () => jobAction(j, "delete") }, "delete")))],
    ]));
    if (!asOf) {
      slider.max = String(Math.max(1, lastSeq));
      slider.value = slider.max;
      sliderText.textContent = `live · event ${lastSeq}`;
    }
  };

  let sliding = null;
  slider.addEventListener("input", () => {
    clearTimeout(sliding);
    sliderText.textContent = `event ${slider.value} of ${lastSeq}…`;
    sliding = setTimeout(async () => {
      const seq = Number(slider.value);
      if (seq >= lastSeq) { asOf = null; banner.style.display = "none"; draw(); return; }
      try {
        asOf = await get(`/api/v1/submissions/${encodeURIComponent(sid)}/as-of?seq=${seq}`);
        banner.style.display = "block";
        banner.setAttribute("data-seq", String(asOf.as_of_seq));
        banner.textContent = `As of event ${asOf.as_of_seq} (${new Date(asOf.as_of_time).toISOString()}, ` +
          `${((asOf.as_of_time - (firstTime ?? asOf.first_time)) / 1000).toFixed(2)} s in): ${asOf.event ? asOf.event.description : ""}`;
        sliderText.textContent = `event ${asOf.as_of_seq} of ${lastSeq}`;
        render();
      } catch (error) { toast(error.message); }
    }, 200);
  });

  const source = stream(`/api/v1/submissions/${encodeURIComponent(sid)}/events`, {
    event: (e) => {
      lastSeq = Math.max(lastSeq, e.seq);
      firstTime = firstTime ?? e.timestamp;
      if (e.job) jobs.set(e.job.job_id, e.job);
      if (e.outcome) outcome = e.outcome;
      if (e.event === "CommandRejected" && e.body.command_type === "SubmitJobs") outcome = "REJECTED";
      if (!asOf) draw();
    },
    live: () => document.getElementById("live-dot").classList.add("on"),
    end: (view) => {
      outcome = view.outcome || outcome;
      source.close();
      document.getElementById("live-dot").classList.remove("on");
      get(`/api/v1/submissions/${encodeURIComponent(sid)}`).then((row) => { attempts = row.attempt_rows; draw(); }).catch(() => {});
      draw();
    },
    error: (e) => { if (e && e.error) toast(e.error); },
  });
  cleanup.push(() => source.close());
  render();
}

// ------------------------------------------------------------------ one job

async function jobPage(sid, jid) {
  const base = `/api/v1/jobs/${encodeURIComponent(sid)}/${encodeURIComponent(jid)}`;
  const info = h("div", { class: "card", id: "job-info" });
  const history = h("div", { class: "card", id: "job-history" });
  const extra = h("div");
  const decision = h("div");
  const mode = h("select", {}, h("option", { value: "kill" }, "kill"), h("option", { value: "finish" }, "finish"));
  main.replaceChildren(
    h("h1", {}, "Job ", jid, " of ", subLink(sid)),
    h("div", { class: "card actions" },
      h("button", { class: "danger", onclick: () => command(decision, "POST", `${base}/cancel`, { mode: mode.value }) }, "Cancel"), mode,
      h("button", { onclick: () => command(decision, "POST", `${base}/retry`) }, "Retry now"),
      h("button", { class: "danger", onclick: () => command(decision, "DELETE", base) }, "Delete"),
      h("button", { class: "danger", onclick: () => command(decision, "DELETE", `${base}?force=true`) }, "Delete (force)"),
      decision),
    info, extra, h("h2", {}, "History"), history);

  const load = async () => {
    let job;
    try { job = await get(base); } catch (error) {
      if (error instanceof ApiError && error.status === 404) { info.textContent = "not in the projection yet"; return; }
      throw error;
    }
    const fields = ["status", "task", "command", "queue", "attempts", "max_attempts", "worker_id", "host",
      "submitted_at", "run_at", "finished_at", "execution_duration", "pending_duration", "blocked_duration",
      "progress", "total", "status_line", "result", "exit_code", "failure_reason", "error_type", "error_note",
      "end_reason", "canceled_by", "depends_on", "parent", "labels", "args", "deleted"];
    info.replaceChildren(table(fields.filter((k) => job[k] !== null && job[k] !== undefined && job[k] !== "")
      .map((k) => ({ k, v: job[k] })), [["field", (r) => r.k], ["value", (r) => (r.k === "status" ? badge(r.v)
        : typeof r.v === "object" ? JSON.stringify(r.v) : String(r.v))]]));
    const output = await get(`${base}/output`);
    const lines = await get(`${base}/history`);
    extra.replaceChildren(
      h("h2", {}, "Attempts"), h("div", { class: "card" }, plainTable(job.attempt_rows.map((a) => ({
        attempt: a.attempt, outcome: a.outcome, worker: a.worker_id, host: a.host, run_at: time(a.run_at),
        finished_at: time(a.finished_at), ran: secs(a.execution_duration), waited: secs(a.queue_wait),
        error: a.error_type ? `${a.error_type}: ${a.error_note || ""}` : "" })))),
      h("h2", {}, "Exceptions"), h("div", { class: "card", id: "job-exceptions" }, job.exception_rows.length
        ? table(job.exception_rows, [["when", (x) => time(x.timestamp)], ["attempt", (x) => x.attempt],
          ["severity", (x) => h("span", { class: x.severity === 0 ? "sev0" : "" }, x.severity === 0 ? "0 (fatal)" : String(x.severity))],
          ["type", (x) => x.type], ["note", (x) => x.note], ["traceback", (x) => (x.traceback ? h("pre", {}, x.traceback) : "")]])
        : h("p", { class: "muted" }, "none")),
      job.traceback ? [h("h2", {}, "Traceback"), h("pre", {}, job.traceback)] : null,
      h("h2", {}, "Output"), h("div", { class: "card", id: "job-output" }, output.outputs.length
        ? output.outputs.map((o) => [h("div", { class: "muted" }, o.stream + (o.dropped ? " (earlier output dropped)" : "")), h("pre", {}, o.text)])
        : h("p", { class: "muted" }, "no output"), output.truncated ? h("p", { class: "muted" }, `cut at ${output.limit_bytes} bytes`) : null));
    history.replaceChildren(table(lines.history, [["created", (l) => time(l.created)], ["event", (l) => l.event],
      ["status", (l) => badge(l.status)], ["attempt", (l) => l.attempt ?? ""], ["description", (l) => l.description]]));
  };
  await load();
  let again = null;
  const source = stream(`${base}/events?from_start=false`, {
    event: () => { clearTimeout(again); again = setTimeout(() => load().catch(() => {}), 700); },
    end: () => { source.close(); setTimeout(() => load().catch(() => {}), 1000); },
  });
  cleanup.push(() => { source.close(); clearTimeout(again); });
}

// ------------------------------------------------------------------ workers and queues

async function workersPage() {
  const box = h("div");
  main.replaceChildren(h("h1", {}, "Workers and queues"), box);
  const load = async () => {
    const data = await get("/api/v1/workers");
    box.replaceChildren(
      h("h2", {}, "Workers"), h("div", { class: "card", id: "workers" }, table(data.workers, [
        ["worker", (w) => w.worker_id], ["alive", (w) => badge(w.alive ? "RUNNING" : w.left ? "CANCELED" : "FAILED")],
        ["queue", (w) => w.queue], ["host", (w) => w.host], ["slots", (w) => `${w.slots_used ?? 0}/${w.slots_total ?? 0}`],
        ["load", (w) => h("div", { class: "bar" }, h("div", { style: `width:${w.slots_total ? (100 * (w.slots_used || 0)) / w.slots_total : 0}%` }))],
        ["attempts", (w) => w.attempts], ["completed", (w) => w.completed], ["failed", (w) => w.failed],
        ["busy", (w) => secs(w.busy_seconds)], ["last heartbeat", (w) => time(w.last_heartbeat)]])),
      h("h2", {}, "Queues"), h("div", { class: "card", id: "queues" }, plainTable(data.queues)),
      h("p", { class: "muted" }, "from the projection's workers table and worker_load view; refreshed every 5 s"));
  };
  await load();
  const timer = setInterval(() => load().catch(() => {}), 5000);
  cleanup.push(() => clearInterval(timer));
}

// ------------------------------------------------------------------ analytics and SQL

async function analyticsPage() {
  const charts = h("div", { class: "grid" });
  const sql = h("textarea", { rows: 4, cols: 90, id: "sql-text" }, "SELECT task, jobs, execution_p50, execution_p90 FROM task_durations");
  const result = h("div", { id: "sql-result" });
  main.replaceChildren(h("h1", {}, "Analytics"), charts,
    h("h2", {}, "SQL (read-only, at most 1,000 rows)"),
    h("div", { class: "card" }, sql, h("br"), h("button", { id: "sql-run", onclick: async () => {
      result.textContent = "running…";
      try {
        const answer = await call("POST", "/api/v1/sql", { sql: sql.value });
        result.replaceChildren(plainTable(answer.rows), h("p", { class: "muted" },
          `${answer.rows.length} row(s)${answer.truncated ? ` (cut at ${answer.limit_rows})` : ""} from the ${answer.source}`));
      } catch (error) { result.replaceChildren(h("div", { class: "decision no" }, error.message)); }
    } }, "Run"), result));
  const view = async (name) => (await get(`/api/v1/analytics/${name}`)).rows;
  const card = (title, node) => h("div", { class: "card" }, h("h2", {}, title), node);
  const [status, tasks, minutes, failures, queues] = await Promise.all(
    ["status_counts", "task_durations", "throughput_per_minute", "task_failures", "queue_wait"].map(view));
  charts.append(
    card("Jobs per status", bars(status, "status", "jobs", { colors: true })),
    card("Execution p90 per task (s)", bars(tasks, "task", "execution_p90")),
    card("Jobs finished per minute", columns(minutes, "minute", "finished")),
    card("Failure rate per task", bars(failures, "task", "failure_rate")),
    card("Queue wait p90 (s)", bars(queues, "queue", "wait_p90")),
    card("Slowest jobs", plainTable((await view("slowest_jobs")).slice(0, 10).map((r) => ({
      job: `${r.submission_id}/${r.job_id}`, task: r.task, ran: secs(r.execution_duration) })))));
}

// ------------------------------------------------------------------ routing

async function route() {
  cleanup.forEach((close) => close());
  cleanup = [];
  if (!token()) { askToken(); return; }
  const parts = (location.hash.replace(/^#\/?/, "") || "jobs").split("/").map(decodeURIComponent);
  document.querySelectorAll("[data-nav]").forEach((a) => a.classList.toggle("active", a.dataset.nav === parts[0]));
  try {
    if (parts[0] === "submission" && parts[1]) await submissionPage(parts[1]);
    else if (parts[0] === "job" && parts[2]) await jobPage(parts[1], parts.slice(2).join("/"));
    else if (parts[0] === "submissions") await submissionsPage();
    else if (parts[0] === "workers") await workersPage();
    else if (parts[0] === "analytics") await analyticsPage();
    else await jobsPage();
  } catch (error) { failure(error); }
}

window.addEventListener("hashchange", route);
token();
route();
