// The dashboard's behaviour (dashboard.html): polls the API and redraws; data is only
// ever inserted with textContent, never as HTML.
"use strict";

const POLL_MS = 2000;
const TIMEOUT_MS = 5000;
/** How many window slots the charts show (the newest ones). */
const MAX_SLOTS = 30;
/** How many ingest-rate samples each topic's sparkline keeps (2 min at 2 s). */
const SPARK_SAMPLES = 60;
const DASH = "\u2014";
const SVG_NS = "http://www.w3.org/2000/svg";

/** The previous stats poll, to turn counters into rates. */
let previous = null;
/** Per topic, the recent ingest rates (records/s), oldest first. */
const rateHistory = new Map();

// ---------- formatting: every formatter maps null/undefined/NaN to an em dash ----------

const missing = (v) => v === null || v === undefined || (typeof v === "number" && !isFinite(v));
const fmtInt = (v) => missing(v) ? DASH : Math.round(v).toLocaleString("en-US");
const fmtRate = (v) => missing(v) ? DASH : (v < 10 ? v.toFixed(1) : Math.round(v).toLocaleString("en-US"));
const fmtMs = (v) => missing(v) ? DASH : (v < 10 ? v.toFixed(1) : Math.round(v).toLocaleString("en-US")) + " ms";
const fmtShare = (v) => missing(v) ? DASH : (Math.round(v * 1000) / 10).toString() + "%";
const fmtRating = (v) => missing(v) ? DASH : v.toFixed(2);
const fmtSentiment = (v) => missing(v) ? DASH : (v > 0 ? "+" : "") + v.toFixed(2);
/** Axis ticks: at most one decimal, none when whole. */
const fmtTick = (v) => (Math.round(v * 10) / 10).toLocaleString("en-US");

function fmtClock(ms, withSeconds) {
  const d = new Date(ms);
  const pad = (n) => String(n).padStart(2, "0");
  return pad(d.getHours()) + ":" + pad(d.getMinutes()) + (withSeconds ? ":" + pad(d.getSeconds()) : "");
}

// ---------- DOM helpers ----------

const $ = (id) => document.getElementById(id);

function setText(id, text) {
  const el = $(id);
  if (el.textContent !== text) el.textContent = text;
}

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

/**
 * Replaces a table's body with `rows` (arrays of texts or cells), or one "empty" row.
 * A column whose header has class `text` is left-aligned like the first.
 */
function fillTable(id, rows, emptyText, rowAttrs) {
  const table = $(id);
  const body = table.tBodies[0];
  const headers = [...table.tHead.rows[0].cells];
  const columns = headers.length;
  const fresh = document.createElement("tbody");
  if (rows.length === 0) {
    const tr = document.createElement("tr");
    tr.className = "empty";
    const td = cell(emptyText);
    td.colSpan = columns;
    tr.appendChild(td);
    fresh.appendChild(tr);
  }
  rows.forEach((cells, i) => {
    const tr = document.createElement("tr");
    if (rowAttrs) for (const [k, v] of Object.entries(rowAttrs(i))) tr.setAttribute(k, v);
    cells.forEach((c, j) => tr.appendChild(c instanceof Node ? c
      : cell(c, headers[j] && headers[j].classList.contains("text") ? "text" : "")));
    fresh.appendChild(tr);
  });
  table.replaceChild(fresh, body);
}

function svgEl(name, attrs, text) {
  const el = document.createElementNS(SVG_NS, name);
  for (const [k, v] of Object.entries(attrs || {})) {
    // Geometry is rounded for a compact DOM; data attributes keep the API's exact values.
    const rounded = typeof v === "number" && !k.startsWith("data-") ? Math.round(v * 100) / 100 : v;
    el.setAttribute(k, String(rounded));
  }
  if (text !== undefined) el.textContent = text;
  return el;
}

function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
}

// ---------- polling ----------

/** An error meaning the server did not answer at all (as opposed to answering an error). */
function offline(message) {
  const e = new Error(message);
  e.offline = true;
  return e;
}

async function getJson(path) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), TIMEOUT_MS);
  try {
    const res = await fetch(path, { cache: "no-store", signal: controller.signal });
    if (!res.ok) {
      let detail = "";
      try { detail = (await res.json()).error.message; } catch (_) { /* not our error JSON */ }
      throw new Error(path + ": HTTP " + res.status + (detail ? " (" + detail + ")" : ""));
    }
    return await res.json();
  } catch (e) {
    if (e.name === "AbortError") throw offline(path + ": no answer within " + TIMEOUT_MS / 1000 + " s");
    if (e instanceof TypeError) throw offline(path + ": server unreachable");
    throw e;
  } finally {
    clearTimeout(timer);
  }
}

/**
 * One poll. `#status` tells whether the server answers (`/v1/stats`); a failing
 * `/v1/kpis` is reported in `#kpi-status` so the stream figures stay usable.
 */
async function poll() {
  const [stats, kpis] = await Promise.allSettled([getJson("/v1/stats"), getJson("/v1/kpis")]);
  if (stats.status === "fulfilled") {
    try {
      renderStats(stats.value);
      setStatus("live", "live");
      document.body.classList.remove("stale");
      setText("updated", fmtClock(stats.value.now_ms || Date.now(), true));
    } catch (e) {
      setStatus("error", "error: cannot show /v1/stats: " + e.message);
    }
  } else {
    setStatus("error", (stats.reason.offline ? "offline: " : "error: ") + stats.reason.message);
    document.body.classList.add("stale");
  }
  if (kpis.status === "fulfilled") {
    try {
      renderKpis(kpis.value);
    } catch (e) {
      kpiStatus("error", "cannot show /v1/kpis: " + e.message);
    }
  } else {
    kpiStatus("error", "KPIs unavailable: " + kpis.reason.message);
  }
}

function setStatus(cls, text) {
  const el = $("status");
  el.className = "pill " + cls;
  setText("status", text);
}

function kpiStatus(cls, text) {
  $("kpi-status").className = cls;
  setText("kpi-status", text);
}

async function loop() {
  try {
    await poll();
  } finally {
    setTimeout(loop, POLL_MS);
  }
}

// ---------- /v1/stats ----------

function renderStats(s) {
  // A stalled or failed source or pipeline outranks readiness.
  const unhealthy = (s.components || []).filter(
    (c) => c.condition === "stalled" || c.condition === "failed");
  const ready = $("stat-ready");
  if (unhealthy.length > 0) {
    ready.className = "pill error";
    setText("stat-ready", "unhealthy: " + unhealthy.map((c) => c.component + " " + c.condition).join(", "));
    ready.title = unhealthy.map((c) => c.component + ": " + (c.reason || c.condition)).join("\n");
  } else {
    ready.className = "pill " + (s.ready ? "live" : "");
    setText("stat-ready", s.ready ? "ready" : "indexing the initial scan");
    ready.title = "";
  }

  // Rates from successive counters, on the server's clock. A counter that went down
  // means the server restarted: that poll starts a new baseline.
  const topics = s.topics || [];
  const rates = new Map();
  const haveRates = previous !== null && s.now_ms > previous.now_ms;
  if (haveRates) {
    const dt = (s.now_ms - previous.now_ms) / 1000;
    for (const t of topics) {
      const before = previous.totals.get(t.topic);
      const delta = t.appended_total - (before === undefined ? 0 : before);
      if (delta >= 0) rates.set(t.topic, delta / dt);
    }
  }
  for (const [topic, rate] of rates) {
    const h = rateHistory.get(topic) || [];
    h.push(rate);
    if (h.length > SPARK_SAMPLES) h.shift();
    rateHistory.set(topic, h);
  }
  previous = { now_ms: s.now_ms, totals: new Map(topics.map((t) => [t.topic, t.appended_total])) };

  const totalRate = haveRates ? [...rates.values()].reduce((a, b) => a + b, 0) : null;
  setText("stat-ingest-rate", fmtRate(totalRate));
  fillTable("topics", topics.map((t) => [
    t.topic, fmtInt(t.appended_total), fmtRate(rates.get(t.topic)), sparkCell(rateHistory.get(t.topic) || []),
  ]), "no records appended yet", (i) => ({ "data-topic": topics[i].topic }));

  const pipelines = s.pipelines || [];
  const sum = (xs, f) => xs.reduce((a, x) => a + (f(x) || 0), 0);
  setText("stat-lag", fmtInt(sum(pipelines, (p) => Math.max(0, p.lag))));
  setText("stat-dead-letters", fmtInt(sum(pipelines, (p) => p.dead_letters)));
  fillTable("pipelines", pipelines.map((p) => [
    p.pipeline, p.topic, fmtInt(p.records_total), fmtInt(Math.max(0, p.lag)), fmtInt(p.dead_letters),
  ]), "no pipeline has consumed yet", (i) => ({ "data-pipeline": pipelines[i].pipeline, "data-topic": pipelines[i].topic }));

  const f = s.freshness_ms || {};
  setText("stat-freshness-p50", fmtMs(f.p50));
  setText("stat-freshness-p95", fmtMs(f.p95));
  setText("stat-freshness-p99", fmtMs(f.p99));

  const index = s.index || {};
  setText("stat-documents", fmtInt(index.documents));
  setText("stat-vectors", fmtInt(index.vectors));

  const lake = s.lake || [];
  setText("stat-lake-rows", fmtInt(sum(lake, (l) => l.rows)));
  fillTable("lake", lake.map((l) => [l.topic, fmtInt(l.files), fmtInt(l.rows)]), "nothing written to the lake yet");

  const late = s.late_events || [];
  setText("stat-late-events", fmtInt(sum(late, (l) => l.count)));
  fillTable("late-events", late.map((l) => [l.topic, fmtInt(l.count)]), "no late events");

  const answers = s.answers || [];
  fillTable("answers", answers.map((a) => [a.model, a.outcome, fmtInt(a.count)]), "no answers served");
}

function sparkCell(values) {
  const td = document.createElement("td");
  const w = 120, h = 24;
  const svg = svgEl("svg", { class: "spark", viewBox: `0 0 ${w} ${h}` });
  if (values.length >= 2) {
    const max = Math.max(...values, 1e-9);
    // Right-aligned: the newest sample is always at the right edge.
    const offset = SPARK_SAMPLES - values.length;
    const pts = values.map((v, i) =>
      (((offset + i) / (SPARK_SAMPLES - 1)) * w).toFixed(1) + "," + (h - 2 - (v / max) * (h - 4)).toFixed(1));
    svg.appendChild(svgEl("polyline", { points: pts.join(" "), fill: "none", stroke: "var(--accent)", "stroke-width": 1.5 }));
  }
  td.appendChild(svg);
  return td;
}

// ---------- /v1/kpis ----------

function renderKpis(k) {
  const size = k.window_ms;
  // Hopping windows start every slide_ms; clock labels need seconds unless that is whole minutes.
  const step = Math.min(size || 0, k.slide_ms || size || 0);
  const all = (k.windows || []).slice().sort((a, b) => a.window_start_ms - b.window_start_ms);
  const latest = all.length ? all[all.length - 1] : null;
  const withSeconds = step > 0 && step % 60000 !== 0;

  if (latest) {
    const state = latest.final ? "final" : "open, provisional";
    setText("kpi-window", "latest window " + fmtClock(latest.window_start_ms, withSeconds) + "–"
      + fmtClock(latest.window_end_ms, withSeconds) + " (" + state + ")");
    kpiStatus("muted", all.length + " window" + (all.length === 1 ? "" : "s")
      + (missing(k.watermark_ms) ? "" : " · watermark " + fmtClock(k.watermark_ms, true))
      + (missing(k.late_events) ? "" : " · " + fmtInt(k.late_events) + " late event" + (k.late_events === 1 ? "" : "s")));
  } else {
    setText("kpi-window", DASH);
    kpiStatus("muted", "no conversations yet");
  }

  const o = latest ? latest.overall : {};
  setText("kpi-conversations", fmtInt(o.conversations));
  setText("kpi-feedback", fmtInt(o.feedback));
  setText("kpi-positive-share", fmtShare(o.positive_share));
  setText("kpi-mean-rating", fmtRating(o.mean_rating));
  setText("kpi-latency-p50", fmtMs(o.latency_p50_ms));
  setText("kpi-latency-p95", fmtMs(o.latency_p95_ms));
  setText("kpi-latency-p99", fmtMs(o.latency_p99_ms));
  setText("kpi-no-context-share", fmtShare(o.no_context_share));
  setText("kpi-sentiment", fmtSentiment(o.mean_sentiment));

  renderModels(latest);
  renderDownvoted(latest ? (latest.overall.top_downvoted || []) : []);

  // The charts show the newest MAX_SLOTS window slots, placed by time, so a window
  // without events leaves a gap instead of squeezing its neighbours together.
  // One slot per window start (every slide, for hopping windows).
  const shown = latest && step > 0
    ? all.filter((w) => w.window_start_ms > latest.window_start_ms - MAX_SLOTS * step)
    : [];
  const x = { windows: shown, step, withSeconds };
  barChart($("chart-conversations"), x, (w) => w.overall.conversations, fmtInt);
  lineChart($("chart-latency"), x, [
    { name: "p50", value: (w) => w.overall.latency_p50_ms, color: "var(--accent)" },
    { name: "p95", value: (w) => w.overall.latency_p95_ms, color: "var(--accent2)" },
  ], { min: 0, format: fmtMs });
  lineChart($("chart-positive-share"), x, [
    { name: "positive_share", value: (w) => w.overall.positive_share, color: "var(--good)" },
  ], { min: 0, max: 1, format: fmtShare, tick: fmtShare });
  lineChart($("chart-mean-rating"), x, [
    { name: "mean_rating", value: (w) => w.overall.mean_rating, color: "var(--accent)" },
  ], { min: 1, max: 5, format: fmtRating });
  lineChart($("chart-sentiment"), x, [
    { name: "mean_sentiment", value: (w) => w.overall.mean_sentiment, color: "var(--accent2)" },
  ], { min: -1, max: 1, zero: true, format: fmtSentiment });
}

function kpiRow(label, m) {
  return [label, fmtInt(m.conversations), fmtInt(m.feedback), fmtMs(m.latency_p50_ms), fmtMs(m.latency_p95_ms),
    fmtMs(m.latency_p99_ms), fmtShare(m.positive_share), fmtRating(m.mean_rating), fmtShare(m.no_context_share),
    fmtSentiment(m.mean_sentiment)];
}

function renderModels(latest) {
  const rows = [];
  const names = [];
  if (latest) {
    rows.push(kpiRow("all models", latest.overall));
    names.push("");
    for (const [model, m] of Object.entries(latest.per_model || {}).sort(([a], [b]) => a.localeCompare(b))) {
      rows.push(kpiRow(model, m));
      names.push(model);
    }
  }
  fillTable("kpi-models", rows, "no window yet", (i) => ({ "data-model": names[i] }));
}

function renderDownvoted(items) {
  const ol = $("top-downvoted");
  clear(ol);
  if (items.length === 0) {
    const li = document.createElement("li");
    li.className = "muted";
    li.style.listStyle = "none";
    li.textContent = "no down-votes in this window";
    ol.appendChild(li);
    return;
  }
  for (const item of items) {
    const li = document.createElement("li");
    li.setAttribute("data-downvotes", String(item.downvotes));
    li.appendChild(document.createTextNode(item.question));
    const votes = document.createElement("span");
    votes.className = "votes";
    votes.textContent = "\u25bc " + fmtInt(item.downvotes);
    li.appendChild(votes);
    ol.appendChild(li);
  }
}

// ---------- charts (inline SVG) ----------

const W = 600, H = 180, M = { left: 52, right: 12, top: 10, bottom: 24 };

/** Slot geometry shared by both chart kinds: x of a window's centre, and the slot width. */
function slots(x) {
  const first = x.windows[0].window_start_ms;
  const last = x.windows[x.windows.length - 1].window_start_ms;
  const n = Math.round((last - first) / x.step) + 1;
  const width = (W - M.left - M.right) / n;
  return {
    width,
    center: (w) => M.left + (Math.round((w.window_start_ms - first) / x.step) + 0.5) * width,
  };
}

/** Axes, grid and labels (ticks formatted by `tick`); returns the y scale. */
function frame(svg, x, min, max, tick, zero) {
  clear(svg);
  const plotH = H - M.top - M.bottom;
  const y = (v) => M.top + plotH * (1 - (v - min) / (max - min || 1));
  for (let i = 0; i <= 4; i++) {
    const v = min + ((max - min) * i) / 4;
    svg.appendChild(svgEl("line", { class: "gridline", x1: M.left, x2: W - M.right, y1: y(v), y2: y(v) }));
    svg.appendChild(svgEl("text", { x: M.left - 6, y: y(v) + 3, "text-anchor": "end" }, tick(v)));
  }
  if (zero) svg.appendChild(svgEl("line", { class: "zero", x1: M.left, x2: W - M.right, y1: y(0), y2: y(0) }));
  svg.appendChild(svgEl("line", { class: "axis", x1: M.left, x2: W - M.right, y1: H - M.bottom, y2: H - M.bottom }));
  // Up to six time labels, always including the newest window.
  const s = slots(x);
  const step = Math.max(1, Math.ceil(x.windows.length / 6));
  x.windows.forEach((w, i) => {
    if ((x.windows.length - 1 - i) % step === 0) {
      svg.appendChild(svgEl("text", { x: s.center(w), y: H - 8, "text-anchor": "middle" },
        fmtClock(w.window_start_ms, x.withSeconds)));
    }
  });
  return y;
}

function emptyChart(svg, text) {
  clear(svg);
  svg.appendChild(svgEl("line", { class: "axis", x1: M.left, x2: W - M.right, y1: H - M.bottom, y2: H - M.bottom }));
  svg.appendChild(svgEl("text", { class: "empty", x: W / 2, y: H / 2, "text-anchor": "middle" }, text));
}

/** A "nice" upper bound (1, 2 or 5 times a power of ten) at or above `v`. */
function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function pointAttrs(series, w, v) {
  return {
    class: "point", "data-series": series, "data-value": v, "data-window-start": w.window_start_ms,
    "data-final": w.final ? "true" : "false",
  };
}

function barChart(svg, x, value, format) {
  const points = x.windows.filter((w) => !missing(value(w)));
  if (points.length === 0) return emptyChart(svg, "no windows yet");
  const max = niceMax(Math.max(...points.map(value)));
  const y = frame(svg, x, 0, max, fmtTick, false);
  const s = slots(x);
  const bw = Math.max(2, Math.min(40, s.width * 0.7));
  for (const w of points) {
    const v = value(w);
    const rect = svgEl("rect", Object.assign(pointAttrs("conversations", w, v), {
      x: s.center(w) - bw / 2, y: y(v), width: bw, height: Math.max(0, y(0) - y(v)), rx: 2,
      fill: "var(--accent)", "fill-opacity": w.final ? 1 : 0.35,
      stroke: "var(--accent)", "stroke-dasharray": w.final ? "none" : "3 2",
    }));
    rect.appendChild(svgEl("title", {}, fmtClock(w.window_start_ms, x.withSeconds) + ": " + format(v)
      + (w.final ? "" : " (open)")));
    svg.appendChild(rect);
  }
}

/**
 * One line per series; a null value breaks the line. `opts.min`/`opts.max` fix the
 * y range (max defaults to a nice bound over the data).
 */
function lineChart(svg, x, series, opts) {
  const values = series.flatMap((sr) => x.windows.map(sr.value)).filter((v) => !missing(v));
  if (values.length === 0) return emptyChart(svg, x.windows.length ? "no values in these windows" : "no windows yet");
  const min = Math.min(opts.min, ...values);
  const max = opts.max !== undefined ? Math.max(opts.max, ...values) : niceMax(Math.max(...values));
  const y = frame(svg, x, min, max, opts.tick || fmtTick, opts.zero);
  const s = slots(x);
  for (const sr of series) {
    // Consecutive slots with values form a segment; a missing value or a skipped slot breaks it.
    let segment = [];
    let lastSlot = null;
    const flush = () => {
      if (segment.length > 1) {
        svg.appendChild(svgEl("polyline", { points: segment.join(" "), fill: "none", stroke: sr.color, "stroke-width": 2 }));
      }
      segment = [];
    };
    for (const w of x.windows) {
      const v = sr.value(w);
      const slot = Math.round(w.window_start_ms / x.step);
      if (missing(v) || (lastSlot !== null && slot !== lastSlot + 1)) flush();
      lastSlot = slot;
      if (!missing(v)) segment.push(s.center(w).toFixed(1) + "," + y(v).toFixed(1));
    }
    flush();
    for (const w of x.windows) {
      const v = sr.value(w);
      if (missing(v)) continue;
      const c = svgEl("circle", Object.assign(pointAttrs(sr.name, w, v), {
        cx: s.center(w), cy: y(v), r: 3.5, stroke: sr.color, "stroke-width": 2,
        fill: w.final ? sr.color : "var(--panel)",
      }));
      c.appendChild(svgEl("title", {}, fmtClock(w.window_start_ms, x.withSeconds) + " " + sr.name + ": "
        + opts.format(v) + (w.final ? "" : " (open)")));
      svg.appendChild(c);
    }
  }
}

for (const svg of document.querySelectorAll("svg.chart")) emptyChart(svg, "waiting for data…");
loop();
