// One entry in full (GET /api/v1/entries/{id}, or /snapshots/{name}/entries/{id} while a
// snapshot is open: set `snapshot`): overview, both ends, request and response with
// headers and bodies, timing, tags, notes, and its pcap. Every field name is a button that adds
// `field == value` to the filter, as Kubeshark's queryable fields do.

import { api } from "./api.js";
import { renderBody } from "./bodies.js";
import { h, replace } from "./dom.js";
import { bytes, dateTime, millis, statusClass, statusText } from "./format.js";
import { equalsClause, kflLiteral, kflPath } from "./kflpath.js";

const HIDDEN_FIELDS = new Set(["headers", "body", "trailers"]);
const HEADER_MAPS = ["headers", "trailers"];

export class DetailView {
  constructor({ root, onFilter, onClose }) {
    this.root = root;
    this.onFilter = onFilter;
    this.onClose = onClose;
    this.id = null;
    this.controller = null;
    this.snapshot = null;   // the name of the opened snapshot, whose saved entries are shown
  }

  async open(id) {
    this.id = id;
    this.controller?.abort();
    this.controller = new AbortController();
    this.root.hidden = false;
    this.root.setAttribute("aria-busy", "true");
    replace(this.root, this.header(id, null), h("p", { class: "muted", role: "status" }, "loading…"));
    let entry;
    try {
      const options = { signal: this.controller.signal };
      entry = this.snapshot ? await api.snapshotEntry(this.snapshot, id, options) : await api.entry(id, options);
    } catch (error) {
      if (error.name === "AbortError") return;
      const detail = error.body?.detail || error.message;
      const why = error.status === 410 ? `its packets were evicted from the store (storage limit): ${detail}`
                : error.status === 404 ? `not found: ${detail}` : detail;
      replace(this.root, this.header(id, null), h("p", { class: "error", role: "alert" }, `Cannot show ${id}: ${why}`));
      this.root.removeAttribute("aria-busy");
      return;
    }
    if (this.id !== id) return;
    this.entry = entry;
    replace(this.root, this.header(id, entry), this.render(entry));
    this.root.removeAttribute("aria-busy");
  }

  close() {
    this.controller?.abort();
    this.id = null;
    this.root.hidden = true;
    replace(this.root);
    this.onClose?.();
  }

  header(id, entry) {
    const cls = entry ? statusClass(entry) : "none";
    return h("header", { class: "detail-head" },
      h("div", { class: "detail-title" },
        entry ? h("span", { class: `proto proto-${entry.protocol}` }, entry.protocol.toUpperCase()) : null,
        entry && statusText(entry) ? h("span", { class: `status-pill st-${cls}` }, statusText(entry)) : null,
        h("h2", { id: "detail-title" }, entry ? entry.summary || "(no summary)" : id)),
      h("div", { class: "detail-actions" },
        entry?.protocol === "http" ? h("button", { type: "button", onclick: (event) => copyCurl(entry, event.currentTarget) }, "Copy as cURL") : null,
        this.snapshot
          ? h("a", { class: "button", href: api.snapshotPcapUrl(this.snapshot), download: `${this.snapshot}.pcap`,
                     "aria-label": "Download the snapshot's pcap", title: "The packets of the whole snapshot, for Wireshark" }, "Snapshot pcap")
          : h("a", { class: "button", href: api.entryPcapUrl(id), download: `${id.replace(/:/g, "-")}.pcap`, "aria-label": "Download this entry's pcap",
                     title: "This exchange's packets, for Wireshark" }, "Download pcap"),
        h("button", { type: "button", class: "close", "aria-label": "Close detail", onclick: () => this.close() }, "✕")));
  }

  render(entry) {
    return h("div", { class: "detail-body" },
      this.overview(entry),
      this.ends(entry),
      this.connection(entry),
      this.message("Request", "request", entry.request, entry),
      entry.response ? this.message("Response", "response", entry.response, entry)
        : section("Response", h("p", { class: "muted" }, "No response captured.")),
      this.timing(entry));
  }

  field(keys, value, label = keys[keys.length - 1], clause = undefined) {
    const kfl = clause === undefined ? equalsClause(keys, value) : clause;
    const name = kfl
      ? h("button", { type: "button", class: "field-name", "data-kfl": kfl, title: `Add to filter: ${kfl}`,
                      "aria-label": `Filter by ${kfl}`, onclick: () => this.onFilter(kfl) }, String(label))
      : h("span", { class: "field-name" }, String(label));
    return h("div", { class: "field-row" }, name, h("span", { class: "field-value" }, display(value)));
  }

  overview(entry) {
    const rows = [
      this.field(["protocol"], entry.protocol, "protocol", entry.protocol),
      this.field(["summary"], entry.summary),
      entry.status !== null && entry.status !== undefined ? this.field(["status"], entry.status) : null,
      this.field(["id"], entry.id),
      this.field(["node"], entry.node),
      this.field(["ts"], dateTime(entry.ts), "time", `ts >= ${entry.ts}`),
      this.field(["elapsed_ms"], millis(entry.elapsed_ms) || "no response", "elapsed",
        typeof entry.elapsed_ms === "number" ? `elapsed_ms >= ${entry.elapsed_ms}` : "elapsed_ms == null"),
      this.field(["size", "request"], entry.size?.request ?? 0, "request size"),
      this.field(["size", "response"], entry.size?.response ?? 0, "response size"),
      this.field(["tls"], entry.tls),
      this.field(["complete"], entry.complete !== false),
    ];
    const tags = entry.tags || [];
    const tagRow = h("div", { class: "field-row" }, h("span", { class: "field-name" }, "tags"),
      h("span", { class: "field-value tags" }, tags.length ? tags.map((tag) => h("button", {
        type: "button", class: "tag", "aria-label": `Filter by tag ${tag}`,
        "data-kfl": `tags.contains(${kflLiteral(tag)})`, onclick: () => this.onFilter(`tags.contains(${kflLiteral(tag)})`),
      }, tag)) : h("span", { class: "muted" }, "none")));
    const notes = (entry.notes || []).length
      ? h("ul", { class: "notes", "aria-label": "Notes from the dissector" }, entry.notes.map((note) => h("li", {}, String(note))))
      : null;
    return section("Overview", h("div", { class: "fields" }, rows, tagRow), notes);
  }

  ends(entry) {
    const side = (key, title) => {
      const ep = entry[key] || {};
      return h("div", { class: "end", "aria-label": title },
        h("h4", {}, title),
        h("div", { class: "fields" }, ["ip", "port", "name", "namespace", "kind"].map((name) =>
          ep[name] === "" || ep[name] === undefined ? null : this.field([key, name], ep[name]))));
    };
    return section("Source → Destination", h("div", { class: "ends" }, side("src", "Source"), h("span", { class: "arrow", "aria-hidden": "true" }, "→"), side("dst", "Destination")));
  }

  /** The TCP connection's facts (worker/connections.py): handshake, retransmissions, who
   *  closed or reset it, the failure. Each one is a filter. */
  connection(entry) {
    const tcp = entry.tcp;
    if (!tcp || typeof tcp !== "object") return null;
    const rows = ["failure", "handshake_ms", "syns", "retransmitted_bytes", "zero_windows", "closed_by", "rst"]
      .map((name) => this.field(["tcp", name], tcp[name] ?? null));
    return section("TCP connection", h("div", { class: "fields", "aria-label": "TCP connection" }, rows));
  }

  message(title, key, message, entry) {
    if (!message || typeof message !== "object") return section(title, h("p", { class: "muted" }, "nothing captured"));
    const fields = h("div", { class: "fields" }, this.tree([key], message));
    const parts = [fields];
    for (const map of HEADER_MAPS) {
      const headers = message[map];
      if (headers && typeof headers === "object" && Object.keys(headers).length) {
        parts.push(h("h4", {}, map === "headers" ? "Headers" : "Trailers"), this.headers([key, map], headers));
      }
    }
    if (message.body !== undefined && message.body !== null) {
      const type = message.content_type || headerValue(message.headers, "content-type") || "";
      const body = renderBody(message.body, type, title);
      parts.push(h("h4", {}, "Body"), body || h("pre", { class: "body raw" }, JSON.stringify(message.body, null, 2)));
    } else if (entry.protocol === "http" || entry.protocol === "http2") {
      const length = message.content_length;
      if (length) parts.push(h("h4", {}, "Body"), h("p", { class: "muted" }, `${bytes(length)} not in the detail`));
    }
    return section(title, parts);
  }

  /** Field rows for every scalar under `value`, nested objects flattened to their paths. */
  tree(keys, value) {
    const rows = [];
    for (const [name, item] of Object.entries(value)) {
      if (keys.length === 1 && HIDDEN_FIELDS.has(name)) continue;
      const path = [...keys, name];
      if (Array.isArray(item) && item.length && item.every((x) => x && typeof x === "object")) {
        item.forEach((element, index) => rows.push(...this.tree([...path, index], element)));
      } else if (item && typeof item === "object" && !Array.isArray(item)) {
        rows.push(...this.tree(path, item));
      } else if (Array.isArray(item) && item.length) {
        // a list of scalars (query values, DNS answers' data, ...): one row per element
        for (const element of item) {
          const literal = kflLiteral(element);
          rows.push(this.field(path, element, kflPath(path.slice(1)),
            literal === null ? null : `${kflPath(path)}.contains(${literal})`));
        }
      } else {
        rows.push(this.field(path, item, kflPath(path.slice(1))));
      }
    }
    return rows;
  }

  headers(keys, headers) {
    const rows = [];
    for (const [name, value] of Object.entries(headers)) {
      for (const one of Array.isArray(value) ? value : [value]) {
        const clause = Array.isArray(value)
          ? `${kflPath([...keys, name])}.contains(${kflLiteral(String(one))})`
          : equalsClause([...keys, name], one);
        rows.push(this.field([...keys, name], one, name, clause));
      }
    }
    return h("div", { class: "fields headers", role: "group", "aria-label": keys.join(" ") }, rows);
  }

  timing(entry) {
    const rows = [h("div", { class: "field-row" }, h("span", { class: "field-name" }, "request start"),
      h("span", { class: "field-value" }, dateTime(entry.ts)))];
    if (typeof entry.elapsed_ms === "number") {
      rows.push(h("div", { class: "field-row" }, h("span", { class: "field-name" }, "response end"),
        h("span", { class: "field-value" }, dateTime(entry.ts + entry.elapsed_ms / 1000))));
      rows.push(h("div", { class: "field-row" }, h("span", { class: "field-name" }, "elapsed"),
        h("span", { class: "field-value" }, millis(entry.elapsed_ms))));
    } else {
      rows.push(h("p", { class: "muted" }, "no response: the exchange has no end"));
    }
    return section("Timing", h("div", { class: "fields" }, rows));
  }
}

function section(title, ...children) {
  const id = `sec-${title.toLowerCase().replace(/[^a-z]+/g, "-")}`;
  return h("section", { class: "detail-section", "aria-labelledby": id }, h("h3", { id }, title), children);
}

function display(value) {
  if (value === null || value === undefined) return h("span", { class: "muted" }, "null");
  if (Array.isArray(value)) return value.map(String).join(", ");
  return String(value);
}

function headerValue(headers, name) {
  if (!headers || typeof headers !== "object") return "";
  for (const [key, value] of Object.entries(headers)) {
    if (key.toLowerCase() === name) return Array.isArray(value) ? String(value[0]) : String(value);
  }
  return "";
}

function shellQuote(text) {
  return `'${String(text).replace(/'/g, "'\\''")}'`;
}

/** A curl command repeating this HTTP request (text bodies only). */
export function curlCommand(entry) {
  const request = entry.request || {};
  const host = request.host || `${entry.dst.ip}:${entry.dst.port}`;
  const query = request.query && typeof request.query === "object"
    ? new URLSearchParams(Object.entries(request.query).flatMap(([k, vs]) => (Array.isArray(vs) ? vs : [vs]).map((v) => [k, String(v)]))).toString()
    : "";
  const url = `${entry.tls ? "https" : "http"}://${host}${request.path || "/"}${query ? `?${query}` : ""}`;
  const parts = ["curl", "-X", request.method || "GET", shellQuote(url)];
  for (const [name, value] of Object.entries(request.headers || {})) {
    if (["host", "content-length"].includes(name.toLowerCase())) continue;
    for (const one of Array.isArray(value) ? value : [value]) parts.push("-H", shellQuote(`${name}: ${one}`));
  }
  const body = request.body;
  if (body && body.encoding === "text" && body.data) parts.push("--data-raw", shellQuote(body.data));
  return parts.join(" ");
}

async function copyCurl(entry, button) {
  const text = curlCommand(entry);
  try {
    await navigator.clipboard.writeText(text);
    button.textContent = "Copied";
  } catch {
    window.prompt("Copy the command:", text);
  }
  setTimeout(() => { button.textContent = "Copy as cURL"; }, 1500);
}
