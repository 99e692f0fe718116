// Stats: entries per protocol and per status class over time (from the entries this page
// holds), totals per protocol, and each worker's health: capture counters, drops, storage use.

import { h, replace, svg } from "./dom.js";
import { STATUS_CLASS_LABELS, bytes, count, duration, millis, percent } from "./format.js";

const CHART_H = 180;
const MAX_BUCKETS = 60;
const NICE_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400];
const STATUS_ORDER = ["ok", "info", "redirect", "client", "error", "none"];

/** Buckets over the rows' time span: {step, start, buckets: [{t, counts: Map}]}. */
export function bucketize(rows, keyOf) {
  if (!rows.length) return { step: 1, start: 0, buckets: [], keys: [] };
  const first = rows[0].ts;
  const last = rows[rows.length - 1].ts;
  const span = Math.max(last - first, 1);
  const step = NICE_STEPS.find((s) => span / s <= MAX_BUCKETS) || NICE_STEPS[NICE_STEPS.length - 1];
  const start = Math.floor(first / step) * step;
  const size = Math.floor((last - start) / step) + 1;
  const buckets = Array.from({ length: size }, (_, i) => ({ t: start + i * step, counts: new Map() }));
  const totals = new Map();
  for (const row of rows) {
    const key = keyOf(row);
    const bucket = buckets[Math.min(size - 1, Math.floor((row.ts - start) / step))];
    bucket.counts.set(key, (bucket.counts.get(key) || 0) + 1);
    totals.set(key, (totals.get(key) || 0) + 1);
  }
  const keys = [...totals.keys()].sort((a, b) => totals.get(b) - totals.get(a));
  return { step, start, buckets, keys, totals };
}

function stackedBars(title, data, colourOf, labelOf, chartWidth) {
  const { buckets, keys, step } = data;
  const max = Math.max(1, ...buckets.map((b) => [...b.counts.values()].reduce((s, v) => s + v, 0)));
  const barW = chartWidth / Math.max(buckets.length, 1);
  const chart = svg("svg", { class: "chart", viewBox: `0 0 ${chartWidth} ${CHART_H + 20}`, role: "img",
    "aria-label": `${title}: ${keys.map((k) => `${labelOf(k)} ${data.totals.get(k)}`).join(", ")}` });
  chart.append(svg("line", { x1: 0, x2: chartWidth, y1: CHART_H, y2: CHART_H, class: "axis" }));
  buckets.forEach((bucket, i) => {
    let y = CHART_H;
    for (const key of keys) {
      const value = bucket.counts.get(key) || 0;
      if (!value) continue;
      const height = (value / max) * (CHART_H - 10);
      y -= height;
      chart.append(svg("rect", { x: i * barW + 1, y, width: Math.max(barW - 2, 1), height, fill: colourOf(key),
        "data-key": key }, svg("title", {}, `${new Date(bucket.t * 1000).toLocaleTimeString()} +${step}s: ${labelOf(key)} ${value}`)));
    }
  });
  chart.append(svg("text", { x: 2, y: 12, class: "chart-max" }, `${count(max)} / ${step}s`));
  if (buckets.length) {
    chart.append(svg("text", { x: 2, y: CHART_H + 16, class: "chart-t" }, new Date(buckets[0].t * 1000).toLocaleTimeString()));
    chart.append(svg("text", { x: chartWidth - 2, y: CHART_H + 16, class: "chart-t", "text-anchor": "end" },
      new Date(buckets[buckets.length - 1].t * 1000).toLocaleTimeString()));
  }
  const legend = h("ul", { class: "legend" }, keys.map((key) => h("li", {},
    h("span", { class: "swatch", style: { background: colourOf(key) } }), `${labelOf(key)} `,
    h("strong", {}, count(data.totals.get(key))))));
  return h("figure", { class: "chart-figure" }, h("figcaption", {}, title), chart, legend);
}

const PROTOCOL_COLOURS = {
  http: "#3b82f6", http2: "#6366f1", grpc: "#8b5cf6", websocket: "#06b6d4", dns: "#14b8a6", redis: "#ef4444",
  kafka: "#f97316", amqp: "#f59e0b", postgres: "#0ea5e9", mysql: "#22c55e", mqtt: "#a855f7", tls: "#64748b",
  tcp: "#94a3b8", udp: "#a3a3a3",
};
const STATUS_COLOURS = { ok: "var(--ok)", info: "var(--muted)", redirect: "var(--redirect)", client: "var(--warn)", error: "var(--bad)", none: "var(--none)" };

export function renderTraffic(root, rows) {
  if (!rows.length) {
    replace(root, h("p", { class: "muted" }, "No entries in this view yet."));
    return;
  }
  // drawn at the width they are shown at, so bars fill it and text keeps its size
  const width = Math.max(400, (root.clientWidth || 900) - 26);
  const byProtocol = bucketize(rows, (row) => row.protocol);
  const byStatus = bucketize(rows, (row) => row.cls);
  byStatus.keys.sort((a, b) => STATUS_ORDER.indexOf(a) - STATUS_ORDER.indexOf(b));
  const perProtocol = new Map();
  for (const row of rows) {
    const item = perProtocol.get(row.protocol) || { count: 0, errors: 0, elapsed: [] };
    item.count += 1;
    if (row.cls === "error") item.errors += 1;
    if (typeof row.elapsed === "number") item.elapsed.push(row.elapsed);
    perProtocol.set(row.protocol, item);
  }
  const table = h("table", { class: "stats-table", "aria-label": "Entries per protocol" },
    h("thead", {}, h("tr", {}, ["Protocol", "Entries", "Errors", "Error rate", "p50", "p99"].map((label, i) => h("th", { scope: "col", class: i ? "num" : null }, label)))),
    h("tbody", {}, [...perProtocol.entries()].sort((a, b) => b[1].count - a[1].count).map(([protocol, item]) => {
      item.elapsed.sort((a, b) => a - b);
      return h("tr", { "data-protocol": protocol },
        h("td", {}, h("span", { class: `proto proto-${protocol}` }, protocol.toUpperCase())),
        h("td", { class: "num" }, count(item.count)), h("td", { class: "num" }, count(item.errors)),
        h("td", { class: "num" }, percent(item.errors / item.count)),
        h("td", { class: "num" }, millis(rank(item.elapsed, 50)) || "—"), h("td", { class: "num" }, millis(rank(item.elapsed, 99)) || "—"));
    })));
  replace(root,
    h("p", { class: "muted" }, `From the ${count(rows.length)} entries this page holds (the current filter).`),
    stackedBars("Entries per protocol", byProtocol, (key) => PROTOCOL_COLOURS[key] || "#888", (key) => key.toUpperCase(), width),
    stackedBars("Entries per status", byStatus, (key) => STATUS_COLOURS[key] || "#888", (key) => STATUS_CLASS_LABELS[key] || key, width),
    table);
}

function rank(sorted, p) {
  if (!sorted.length) return null;
  return sorted[Math.min(sorted.length, Math.max(1, Math.ceil((p / 100) * sorted.length))) - 1];
}

/** The workers block from GET /api/v1/status. */
export function renderWorkers(root, status, error) {
  if (error) {
    replace(root, h("p", { class: "error", role: "alert" }, `Cannot read the hub's status: ${error}`));
    return;
  }
  if (!status) return;
  const { hub, workers } = status;
  const rows = workers.map((w) => {
    const s = w.status || {};
    const capture = s.capture || {};
    const store = s.store || {};
    const dissection = s.dissection || {};
    const used = store.limit ? store.bytes / store.limit : null;
    const sourceErrors = (capture.sources || []).filter((src) => src.error).map((src) => `${src.name}: ${src.error}`);
    const problems = [w.ok === false ? w.error : null, w.busy, ...sourceErrors, capture.last_write_error, dissection.last_error].filter(Boolean);
    return h("tr", { "data-node": w.node || w.url, class: w.ok === false ? "down" : "" },
      h("th", { scope: "row" }, w.node || w.url),
      h("td", {}, h("span", { class: `health ${w.state === "busy" ? "st-warn" : w.ok === true ? "st-ok" : w.ok === false ? "st-error" : "st-none"}` },
        w.state === "busy" ? "busy" : w.ok === true ? "up" : w.ok === false ? "down" : "unknown")),
      h("td", {}, (capture.sources || []).map((src) => src.name).join(", ") || "—"),
      h("td", { class: "num" }, count(capture.received)),
      h("td", { class: `num ${capture.dropped ? "st-error" : ""}` }, count(capture.dropped)),
      h("td", { class: `num ${capture.if_dropped ? "st-error" : ""}` }, count(capture.if_dropped)),
      h("td", {}, used === null ? "—" : [
        h("meter", { min: 0, max: 1, value: used, high: 0.9, "aria-label": `storage of ${w.node}` }),
        ` ${bytes(store.bytes)} / ${bytes(store.limit)} (${percent(used)})`]),
      h("td", { class: "num" }, count(s.index?.entries)),
      h("td", { class: "num" }, dissection.lag_bytes ? `${bytes(dissection.lag_bytes)} (${millis((dissection.lag_seconds || 0) * 1000)})` : "0"),
      h("td", { class: `num ${dissection.shed_bytes ? "st-error" : ""}` }, bytes(dissection.shed_bytes || 0)),
      h("td", { class: "problems" }, problems.join("; ") || "—"));
  });
  replace(root,
    h("p", {}, `Hub ${hub.version}, up ${duration(hub.uptime_s)}; workers ${hub.workers_ok}/${hub.workers} up.`),
    h("table", { class: "workers-table", "aria-label": "Workers" },
      h("thead", {}, h("tr", {}, ["Node", "State", "Sources", "Packets", "Kernel drops", "Interface drops", "Storage",
        "Entries", "Dissection lag", "Shed", "Problems"].map((label) => h("th", { scope: "col" }, label)))),
      h("tbody", {}, rows)));
}
