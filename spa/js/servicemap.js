// The service map (GET /api/v1/servicemap): endpoints as nodes, src -> dst edges with their
// request count, error rate and p50/p99 latency; laid out by a small force simulation (nodes
// keep their places across refreshes and can be dragged), with the same data as a table.

import { api } from "./api.js";
import { h, replace, svg } from "./dom.js";
import { count, millis, percent, plural } from "./format.js";
import { kflLiteral } from "./kflpath.js";

const WIDTH = 1000;
const HEIGHT = 640;
const NODE_R = 18;

/** The address in a node id made from an IP: "10.0.0.1", "10.0.0.2:8080", "fe80::1",
 *  "[fe80::1]:8080" (hub/servicemap.py endpoint_id); null for a resolved name. */
export function parseAddress(id) {
  let match = /^\[([0-9A-Fa-f:.]+)\]:(\d+)$/.exec(id);
  if (match) return { ip: match[1], port: Number(match[2]) };
  match = /^(\d{1,3}(?:\.\d{1,3}){3})(?::(\d+))?$/.exec(id);
  if (match) return { ip: match[1], port: match[2] === undefined ? null : Number(match[2]) };
  if (/^[0-9A-Fa-f:.]+$/.test(id) && id.includes(":")) return { ip: id, port: null };
  return null;
}

/** KFL clauses for one side of an edge: by name when the resolver named it, else by address. */
export function endpointClause(node, side) {
  const address = node.namespace ? null : parseAddress(node.id);
  if (!address) {
    const parts = [`${side}.name == ${kflLiteral(node.name)}`];
    if (node.namespace) parts.push(`${side}.namespace == ${kflLiteral(node.namespace)}`);
    return parts.join(" and ");
  }
  const ip = `${side}.ip == ${kflLiteral(address.ip)}`;
  return address.port === null ? ip : `${ip} and ${side}.port == ${address.port}`;
}

function edgeColour(edge) {
  if (edge.error_rate >= 0.1) return "var(--bad)";
  if (edge.error_rate > 0) return "var(--warn)";
  return "var(--edge)";
}

export class ServiceMap {
  constructor({ root, onFilter }) {
    this.root = root;
    this.onFilter = onFilter;
    this.positions = new Map();   // node id -> {x, y}, kept across refreshes
    this.data = null;
    this.q = "";
    this.controller = null;
  }

  /** A refresh by the timer: skipped while a node is being dragged. */
  refresh(q) {
    if (!this.dragging) this.load(q);
  }

  async load(q) {
    this.q = q;
    this.controller?.abort();
    this.controller = new AbortController();
    this.root.setAttribute("aria-busy", "true");
    try {
      this.data = await api.servicemap({ q }, { signal: this.controller.signal });
      this.error = null;
    } catch (error) {
      if (error.name === "AbortError") return;
      this.error = error.message;
    }
    this.root.removeAttribute("aria-busy");
    this.draw();
  }

  draw() {
    if (this.error) {
      replace(this.root, h("p", { class: "error", role: "alert" }, `Cannot load the service map: ${this.error}`));
      return;
    }
    const { nodes = [], edges = [], entries = 0, workers = [] } = this.data || {};
    const failed = workers.filter((w) => !w.ok);
    const summary = h("p", { class: "map-summary", role: "status" },
      `${plural(nodes.length, "endpoint")}, ${plural(edges.length, "connection")} from ${plural(entries, "entry", "entries")}`
      + (this.q ? ` matching ${this.q}` : ""),
      failed.length ? h("span", { class: "warn" }, ` — partial: ${failed.map((w) => `${w.node || w.url}: ${w.error}`).join("; ")}`) : null);
    if (!nodes.length) {
      replace(this.root, summary, h("p", { class: "muted" }, "No traffic yet for the map."));
      return;
    }
    layout(nodes, edges, this.positions);
    replace(this.root, summary, this.graph(nodes, edges), this.table(nodes, edges));
  }

  graph(nodes, edges) {
    const byId = new Map(nodes.map((node) => [node.id, node]));
    const pairs = new Set(edges.map((e) => `${e.source}\u0000${e.target}`));
    const maxCount = Math.max(...edges.map((e) => e.count), 1);
    const edgeEls = [];
    const nodeEls = new Map();
    const root = svg("svg", { class: "map", viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img",
      "aria-label": `Service map: ${plural(nodes.length, "endpoint")}, ${plural(edges.length, "connection")}` });
    root.append(svg("defs", {}, ["edge", "warn", "bad"].map((kind) => svg("marker", {
      id: `arrow-${kind}`, viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 11, markerHeight: 11,
      markerUnits: "userSpaceOnUse", orient: "auto",
    }, svg("path", { d: "M0,0 L10,5 L0,10 z", fill: `var(--${kind})` })))));
    const edgeLayer = svg("g", { class: "edges" });
    const nodeLayer = svg("g", { class: "nodes" });
    root.append(edgeLayer, nodeLayer);
    for (const edge of edges) {
      const colour = edgeColour(edge);
      const kind = colour.includes("bad") ? "bad" : colour.includes("warn") ? "warn" : "edge";
      const path = svg("path", { class: "edge-line", stroke: colour, "stroke-width": 1.2 + 4 * Math.log1p(edge.count) / Math.log1p(maxCount),
                                 fill: "none", "marker-end": `url(#arrow-${kind})` });
      const label = svg("text", { class: "edge-label" }, edgeLabel(edge));
      const group = svg("g", { class: "edge", "data-source": edge.source, "data-target": edge.target,
                               tabindex: 0, role: "button", "aria-label": `${edge.source} to ${edge.target}: ${edgeLabel(edge)}`,
                               onclick: () => this.filterEdge(edge, byId) },
        svg("title", {}, `${edge.source} → ${edge.target}\n${edge.protocol}: ${edgeLabel(edge)}`), path, label);
      const bend = pairs.has(`${edge.target}\u0000${edge.source}`) ? 28 : 0;
      edgeEls.push({ edge, path, label, bend });
      edgeLayer.append(group);
    }
    const place = () => {
      for (const { edge, path, label, bend } of edgeEls) {
        const a = this.positions.get(edge.source);
        const b = this.positions.get(edge.target);
        const { d, mid, normal } = edgePath(a, b, bend);
        path.setAttribute("d", d);
        // beside the line, on the side away from a reverse edge's curve
        label.setAttribute("x", mid.x + normal.x * 10);
        label.setAttribute("y", mid.y + normal.y * 10 + 3);
      }
      for (const [id, el] of nodeEls) {
        const p = this.positions.get(id);
        el.setAttribute("transform", `translate(${p.x},${p.y})`);
      }
      if (!this.dragging) fit(root, [...this.positions.entries()].filter(([id]) => nodeEls.has(id)).map(([, p]) => p));
    };
    for (const node of nodes) {
      const group = svg("g", { class: `node kind-${node.kind || "unknown"}`, "data-id": node.id, tabindex: 0, role: "button",
                               "aria-label": `Endpoint ${node.id}` },
        svg("title", {}, `${node.id}${node.kind ? ` (${node.kind})` : ""}`),
        svg("circle", { r: NODE_R }),
        svg("text", { class: "node-label", y: NODE_R + 14 }, node.namespace ? node.name : node.id),
        node.namespace ? svg("text", { class: "node-ns", y: NODE_R + 27 }, node.namespace) : null);
      drag(group, root, (x, y) => { this.positions.set(node.id, { x, y }); place(); },
        (dragging) => { this.dragging = dragging; });
      group.addEventListener("keydown", (event) => { if (event.key === "Enter") this.filterNode(node); });
      group.addEventListener("dblclick", () => this.filterNode(node));
      nodeEls.set(node.id, group);
      nodeLayer.append(group);
    }
    place();
    return h("figure", { class: "map-figure" }, root,
      h("figcaption", { class: "muted" }, "Drag to move; double-click an endpoint or click a connection to see its traffic."));
  }

  table(nodes, edges) {
    const byId = new Map(nodes.map((node) => [node.id, node]));
    return h("table", { class: "edges-table", "aria-label": "Connections" },
      h("thead", {}, h("tr", {}, ["Source", "Destination", "Protocol", "Requests", "Errors", "Error rate",
        "Failed connections", "Unanswered", "p50", "p99", ""].map((label, i) => h("th", { scope: "col", class: i >= 3 && i <= 9 ? "num" : null }, label)))),
      h("tbody", {}, edges.map((edge) => h("tr", { "data-source": edge.source, "data-target": edge.target },
        h("td", {}, edge.source), h("td", {}, edge.target), h("td", {}, edge.protocol),
        h("td", { class: "num" }, count(edge.count)), h("td", { class: "num" }, count(edge.errors)),
        h("td", { class: `num ${edge.error_rate > 0 ? "st-error" : ""}` }, percent(edge.error_rate)),
        h("td", { class: `num ${failedCount(edge) ? "st-error" : ""}`, title: failedText(edge) || null }, failedText(edge) || "0"),
        h("td", { class: "num" }, count(edge.unanswered)),
        h("td", { class: "num" }, millis(edge.p50_ms) || "—"), h("td", { class: "num" }, millis(edge.p99_ms) || "—"),
        h("td", {}, h("button", { type: "button", onclick: () => this.filterEdge(edge, byId),
                                  "aria-label": `Show traffic ${edge.source} to ${edge.target}` }, "Traffic"))))));
  }

  filterEdge(edge, byId) {
    const source = byId.get(edge.source);
    const target = byId.get(edge.target);
    if (source && target) this.onFilter(`${endpointClause(source, "src")} and ${endpointClause(target, "dst")}`);
  }

  filterNode(node) {
    const src = endpointClause(node, "src");
    const dst = endpointClause(node, "dst");
    this.onFilter(`(${src}) or (${dst})`);
  }
}

const FAILURES = ["refused", "reset", "timeout", "abandoned"];   // hub/servicemap.py FAILURES

function failedCount(edge) {
  const failed = edge.failed || {};
  return FAILURES.reduce((sum, kind) => sum + (failed[kind] || 0), 0);
}

/** "2 refused, 1 reset" (hub/servicemap.py `failed`); "" when none failed. */
function failedText(edge) {
  const failed = edge.failed || {};
  return FAILURES.filter((kind) => failed[kind]).map((kind) => `${count(failed[kind])} ${kind}`).join(", ");
}

function edgeLabel(edge) {
  const latency = edge.p50_ms === null ? "no responses" : `p50 ${millis(edge.p50_ms)} / p99 ${millis(edge.p99_ms)}`;
  const failed = failedText(edge);
  return `${count(edge.count)} req · ${percent(edge.error_rate)} err${failed ? ` · ${failed}` : ""} · ${latency}`;
}

function edgePath(a, b, bend) {
  if (a === b || (a.x === b.x && a.y === b.y)) {
    // an endpoint talking to itself: a loop above the node
    const r = NODE_R;
    return { d: `M${a.x - r * 0.6},${a.y - r * 0.8} C${a.x - r * 2},${a.y - r * 3.5} ${a.x + r * 2},${a.y - r * 3.5} ${a.x + r * 0.6},${a.y - r * 0.8}`,
             mid: { x: a.x, y: a.y - r * 2.9 }, normal: { x: 0, y: -1 } };
  }
  const dx = b.x - a.x;
  const dy = b.y - a.y;
  const length = Math.hypot(dx, dy) || 1;
  const ux = dx / length;
  const uy = dy / length;
  // start and end on the circles' rims, so the arrowhead is visible
  const start = { x: a.x + ux * NODE_R, y: a.y + uy * NODE_R };
  const end = { x: b.x - ux * (NODE_R + 2), y: b.y - uy * (NODE_R + 2) };
  // the normal that points up (or left), for the label of a straight edge
  const up = -ux < 0 || (ux === 0 && uy > 0) ? { x: uy, y: -ux } : { x: -uy, y: ux };
  if (!bend) return { d: `M${start.x},${start.y} L${end.x},${end.y}`, mid: { x: (start.x + end.x) / 2, y: (start.y + end.y) / 2 }, normal: up };
  const control = { x: (start.x + end.x) / 2 - uy * bend * 2, y: (start.y + end.y) / 2 + ux * bend * 2 };
  const mid = { x: (start.x + 2 * control.x + end.x) / 4, y: (start.y + 2 * control.y + end.y) / 4 };
  return { d: `M${start.x},${start.y} Q${control.x},${control.y} ${end.x},${end.y}`, mid, normal: { x: -uy, y: ux } };
}

/** Fruchterman-Reingold: repulsion between all nodes, springs along edges, gravity to the centre. */
export function layout(nodes, edges, positions) {
  const n = nodes.length;
  const ids = nodes.map((node) => node.id);
  const index = new Map(ids.map((id, i) => [id, i]));
  const xs = new Float64Array(n);
  const ys = new Float64Array(n);
  let fresh = 0;
  ids.forEach((id, i) => {
    const known = positions.get(id);
    if (known) { xs[i] = known.x; ys[i] = known.y; return; }
    const angle = (2 * Math.PI * i) / n;
    xs[i] = WIDTH / 2 + (WIDTH / 3) * Math.cos(angle);
    ys[i] = HEIGHT / 2 + (HEIGHT / 3) * Math.sin(angle);
    fresh += 1;
  });
  if (fresh) {
    const k = Math.sqrt((WIDTH * HEIGHT) / Math.max(n, 1)) * 0.6;
    const links = edges.map((e) => [index.get(e.source), index.get(e.target)]).filter(([a, b]) => a !== undefined && b !== undefined && a !== b);
    const iterations = Math.min(300, 60 + Math.round(20000 / Math.max(n, 1)));
    let temperature = WIDTH / 8;
    const dx = new Float64Array(n);
    const dy = new Float64Array(n);
    for (let iter = 0; iter < iterations; iter += 1) {
      dx.fill(0); dy.fill(0);
      for (let i = 0; i < n; i += 1) {
        for (let j = i + 1; j < n; j += 1) {
          let ddx = xs[i] - xs[j];
          let ddy = ys[i] - ys[j];
          let d2 = ddx * ddx + ddy * ddy;
          if (d2 < 0.01) { ddx = Math.random() - 0.5; ddy = Math.random() - 0.5; d2 = 0.5; }
          const force = (k * k) / d2;
          dx[i] += ddx * force; dy[i] += ddy * force;
          dx[j] -= ddx * force; dy[j] -= ddy * force;
        }
      }
      for (const [a, b] of links) {
        const ddx = xs[a] - xs[b];
        const ddy = ys[a] - ys[b];
        const d = Math.hypot(ddx, ddy) || 0.01;
        const force = d / k;
        dx[a] -= ddx * force; dy[a] -= ddy * force;
        dx[b] += ddx * force; dy[b] += ddy * force;
      }
      for (let i = 0; i < n; i += 1) {
        dx[i] += (WIDTH / 2 - xs[i]) * 0.05;
        dy[i] += (HEIGHT / 2 - ys[i]) * 0.05;
        const d = Math.hypot(dx[i], dy[i]) || 1;
        xs[i] += (dx[i] / d) * Math.min(d, temperature);
        ys[i] += (dy[i] / d) * Math.min(d, temperature);
      }
      temperature *= 0.97;
    }
  }
  // keep everything inside the drawing, with room for labels
  for (let i = 0; i < n; i += 1) {
    positions.set(ids[i], {
      x: Math.max(NODE_R + 60, Math.min(WIDTH - NODE_R - 60, xs[i])),
      y: Math.max(NODE_R + 10, Math.min(HEIGHT - NODE_R - 32, ys[i])),
    });
  }
}

/** The viewBox: centred on the nodes (with room for labels), at one unit per pixel of the
 *  drawing when they fit, zoomed out just enough when they do not. */
function fit(root, points) {
  if (!points.length) return;
  const rect = root.getBoundingClientRect();
  const width = rect.width || WIDTH;
  const height = rect.height || HEIGHT;
  const xs = points.map((p) => p.x);
  const ys = points.map((p) => p.y);
  const x0 = Math.min(...xs) - 120;
  const x1 = Math.max(...xs) + 120;
  const y0 = Math.min(...ys) - 70;
  const y1 = Math.max(...ys) + 60;
  const scale = Math.max(1, (x1 - x0) / width, (y1 - y0) / height);
  const cx = (x0 + x1) / 2;
  const cy = (y0 + y1) / 2;
  root.setAttribute("viewBox", `${cx - (width * scale) / 2} ${cy - (height * scale) / 2} ${width * scale} ${height * scale}`);
}

function drag(element, root, moved, onDragging) {
  element.addEventListener("pointerdown", (event) => {
    event.preventDefault();
    element.setPointerCapture(event.pointerId);
    onDragging(true);
    const matrix = root.getScreenCTM().inverse();
    const move = (e) => {
      const p = new DOMPoint(e.clientX, e.clientY).matrixTransform(matrix);
      moved(Math.max(0, Math.min(WIDTH, p.x)), Math.max(0, Math.min(HEIGHT, p.y)));
    };
    const up = () => {
      onDragging(false);
      element.removeEventListener("pointermove", move);
      element.removeEventListener("pointerup", up);
    };
    element.addEventListener("pointermove", move);
    element.addEventListener("pointerup", up);
  });
}
