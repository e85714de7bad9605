// Drawings of the dashboard, as SVG built from data: a submission's DAG/tree, a Gantt of
// its jobs' phases and attempts, and bar charts of the analytics views.

const NS = "http://www.w3.org/2000/svg";

export const STATUSES = ["SUBMITTED", "BLOCKED", "PENDING", "ASSIGNED", "RUNNING",
  "COMPLETED", "FAILED", "CANCELED", "SKIPPED", "ABANDONED"];

export function color(status) {
  return getComputedStyle(document.documentElement).getPropertyValue(`--${status}`).trim()
    || "#9ca3af";
}

function el(name, attrs = {}, text) {
  const node = document.createElementNS(NS, name);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function svg(width, height, id) {
  const root = el("svg", { width, height, viewBox: `0 0 ${width} ${height}` });
  if (id) root.id = id;
  const defs = el("defs");
  const marker = el("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5,
    markerWidth: 6, markerHeight: 6, orient: "auto-start-reverse" });
  marker.append(el("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#94a3b8" }));
  defs.append(marker);
  root.append(defs);
  return root;
}

// Jobs in layers: a job comes after the jobs it depends on and after its sub-jobs (a parent
// runs once its children completed), so edges always point right.
export function dag(jobs, { onClick } = {}) {
  const byId = new Map(jobs.map((job) => [job.job_id, job]));
  const before = new Map(jobs.map((job) => [job.job_id, []]));
  for (const job of jobs) {
    for (const dep of job.depends_on || []) if (byId.has(dep)) before.get(job.job_id).push([dep, "dep"]);
    if (job.parent && byId.has(job.parent)) before.get(job.parent).push([job.job_id, "child"]);
  }
  const layer = new Map();
  const depth = (id, seen = new Set()) => {
    if (layer.has(id)) return layer.get(id);
    if (seen.has(id)) return 0;
    seen.add(id);
    let d = 0;
    for (const [other] of before.get(id)) d = Math.max(d, depth(other, seen) + 1);
    layer.set(id, d);
    return d;
  };
  jobs.forEach((job) => depth(job.job_id));
  const columns = [];
  for (const job of jobs) {
    const d = layer.get(job.job_id);
    (columns[d] = columns[d] || []).push(job);
  }
  const W = 150, H = 34, GX = 60, GY = 12, PAD = 10;
  const rows = Math.max(1, ...columns.map((c) => (c ? c.length : 0)));
  const root = svg(PAD * 2 + columns.length * (W + GX) - GX, PAD * 2 + rows * (H + GY) - GY, "dag");
  const at = new Map();
  columns.forEach((column, x) => (column || []).forEach((job, y) => {
    at.set(job.job_id, { x: PAD + x * (W + GX), y: PAD + y * (H + GY) });
  }));
  for (const [id, list] of before) {
    for (const [other, kind] of list) {
      const a = at.get(other), b = at.get(id);
      const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = b.y + H / 2;
      root.append(el("path", { class: `edge ${kind}`,
        d: `M ${x1} ${y1} C ${x1 + GX / 2} ${y1}, ${x2 - GX / 2} ${y2}, ${x2} ${y2}` }));
    }
  }
  for (const job of jobs) {
    const { x, y } = at.get(job.job_id);
    const g = el("g", { class: "node", transform: `translate(${x},${y})`,
      "data-job": job.job_id, "data-status": job.status });
    g.append(el("rect", { width: W, height: H, fill: color(job.status) }));
    const fraction = job.fraction ?? (job.total ? job.progress / job.total : null);
    if (fraction !== null && fraction !== undefined && job.status === "RUNNING") {
      g.append(el("rect", { y: H - 4, width: W * Math.max(0, Math.min(1, fraction)), height: 4,
        fill: "#fff", stroke: "none" }));
    }
    g.append(el("text", { x: 6, y: 14 }, job.job_id.length > 22 ? job.job_id.slice(0, 21) + "…" : job.job_id));
    g.append(el("text", { x: 6, y: 27 }, job.status));
    g.append(el("title", {}, `${job.job_id}: ${job.status}`));
    if (onClick) { g.style.cursor = "pointer"; g.addEventListener("click", () => onClick(job)); }
    root.append(g);
  }
  return root;
}

const ms = (value) => (value ? new Date(value).getTime() : null);

// One row per job: waiting (submitted to run, light) and running (run to finish, colored by
// the outcome); a job still running extends to now. Earlier attempts come from `attempts`.
export function gantt(jobs, attempts = [], now = Date.now()) {
  const spans = [];
  for (const job of jobs) {
    const start = ms(job.submitted_at);
    if (start === null) continue;
    const run = ms(job.run_at);
    const end = ms(job.finished_at);
    const prior = attempts.filter((a) => a.job_id === job.job_id && a.attempt < job.attempt);
    spans.push({ job, start, run, end: end ?? (job.status.match(/COMPLETED|FAILED|CANCELED|SKIPPED|ABANDONED/) ? start : now), prior });
  }
  const W = 760, ROW = 18, LEFT = 150, PAD = 20;
  const root = svg(W, PAD * 2 + Math.max(1, spans.length) * ROW, "gantt");
  root.setAttribute("width", "100%");  // scales with its card; the viewBox keeps the drawing
  root.removeAttribute("height");
  if (!spans.length) return root;
  const t0 = Math.min(...spans.map((s) => s.start));
  const t1 = Math.max(t0 + 1, ...spans.map((s) => s.end));
  const x = (t) => LEFT + ((t - t0) / (t1 - t0)) * (W - LEFT - 10);
  root.append(el("text", { x: LEFT, y: 12 }, "0 s"));
  root.append(el("text", { x: W - 60, y: 12 }, `${((t1 - t0) / 1000).toFixed(1)} s`));
  spans.forEach((s, i) => {
    const y = PAD + i * ROW;
    root.append(el("text", { x: 0, y: y + 12 }, s.job.job_id.slice(0, 22)));
    root.append(el("rect", { x: x(s.start), y: y + 3, width: Math.max(1, x(s.run ?? s.end) - x(s.start)),
      height: ROW - 6, fill: "#e5e7eb" }));
    for (const a of s.prior) {
      const a0 = ms(a.run_at), a1 = ms(a.finished_at);
      if (a0 && a1) root.append(el("rect", { x: x(a0), y: y + 3, width: Math.max(1, x(a1) - x(a0)),
        height: ROW - 6, fill: color(a.outcome || "FAILED"), opacity: 0.5 }));
    }
    if (s.run !== null) {
      const r = el("rect", { x: x(s.run), y: y + 3, width: Math.max(2, x(s.end) - x(s.run)),
        height: ROW - 6, fill: color(s.job.status), "data-job": s.job.job_id });
      r.append(el("title", {}, `${s.job.job_id} attempt ${s.job.attempt}: ${s.job.status}`));
      root.append(r);
    }
  });
  return root;
}

// Horizontal bars: one per row, `value` a column name.
export function bars(rows, label, value, { colors } = {}) {
  const W = 520, ROW = 20, LEFT = 170;
  const root = svg(W, 10 + Math.max(1, rows.length) * ROW);
  const top = Math.max(1e-9, ...rows.map((r) => Number(r[value]) || 0));
  rows.forEach((row, i) => {
    const v = Number(row[value]) || 0;
    const y = 5 + i * ROW;
    root.append(el("text", { x: 0, y: y + 13 }, String(row[label]).slice(0, 26)));
    root.append(el("rect", { x: LEFT, y: y + 2, height: ROW - 6,
      width: Math.max(1, ((W - LEFT - 70) * v) / top),
      fill: colors ? color(row[label]) : "#2563eb" }));
    root.append(el("text", { x: LEFT + ((W - LEFT - 70) * v) / top + 4, y: y + 13 },
      Number.isInteger(v) ? String(v) : v.toFixed(3)));
  });
  return root;
}

// Columns over time (throughput per minute), oldest left.
export function columns(rows, time, value) {
  const W = 520, H = 140, PAD = 20;
  const root = svg(W, H + PAD);
  const data = [...rows].reverse();
  const top = Math.max(1, ...data.map((r) => Number(r[value]) || 0));
  const w = (W - PAD) / Math.max(1, data.length);
  data.forEach((row, i) => {
    const v = Number(row[value]) || 0;
    const h = (H - PAD) * (v / top);
    const r = el("rect", { x: PAD + i * w, y: H - h, width: Math.max(1, w - 1), height: h, fill: "#16a34a" });
    r.append(el("title", {}, `${row[time]}: ${v}`));
    root.append(r);
  });
  root.append(el("text", { x: 0, y: 12 }, String(top)));
  return root;
}
