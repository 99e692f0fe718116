// The hub's REST API (docs/API.md, "Hub API"), relative to where the page is served, so a
// hub behind a path prefix (kubectl proxy, an ingress) works too.

import { compact, isEntry } from "./entries.js";
import { refused } from "./login.js";

const BASE = new URL("api/v1/", new URL(".", location.href));

export class ApiError extends Error {
  constructor(message, status = null, body = null) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

/** An absolute URL of an API path with query parameters (empty values left out). */
export function apiUrl(path, params = {}) {
  const url = new URL(path.replace(/^\//, ""), BASE);
  for (const [name, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(name, value);
  }
  return url.toString();
}

export function wsUrl(path) {
  const url = new URL(apiUrl(path));
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url.toString();
}

/** GET JSON; an ApiError with the hub's `detail` for a 4xx/5xx, or why the hub is unreachable. */
export async function getJson(path, params = {}, { signal } = {}) {
  let response;
  try {
    response = await fetch(apiUrl(path, params), { signal, headers: { Accept: "application/json" } });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(`cannot reach the hub (${error.message})`);
  }
  const text = await response.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch { body = null; }
  if (!response.ok) {
    if (response.status === 401) refused();
    const detail = body && typeof body === "object" && body.detail ? body.detail : text.slice(0, 200);
    throw new ApiError(`${response.status} ${detail || response.statusText}`, response.status, body);
  }
  if (body === null && text) throw new ApiError(`the hub answered ${path} with something that is not JSON`);
  return body;
}

// Entry lists are loaded by a module worker (loader.js) when the browser has them; else here.
let loader = null;
let loaderFailed = false;
let nextLoad = 0;
const pendingLoads = new Map();

function startLoader() {
  try {
    loader = new Worker(new URL("./loader.js", import.meta.url), { type: "module" });
  } catch {
    loaderFailed = true;
    return null;
  }
  loader.onmessage = ({ data }) => {
    const pending = pendingLoads.get(data.id);
    if (!pending) return;
    if (data.rows) {
      pending.onRows(data.rows);
      return;
    }
    pendingLoads.delete(data.id);
    if (data.error?.status === 401) refused();
    if (data.error) pending.reject(new ApiError(data.error.detail, data.error.status, data.error.body ?? null));
    else pending.resolve({ count: data.count, workers: data.workers, timing: { ...data.timing, sent: pending.sent } });
  };
  loader.onerror = (event) => {
    // the worker script itself failed: answer what is pending here and stop using it
    event.preventDefault();
    loaderFailed = true;
    loader = null;
    for (const [, pending] of pendingLoads) pending.fallback();
    pendingLoads.clear();
  };
  return loader;
}

/** GET /entries (or an opened snapshot's: path snapshots/NAME/entries, the same answer): its
 *  rows (compact, oldest first) are handed to onRows, in one or more chunks; resolves with
 *  {count, workers, timing} once all were handed over. */
export function loadRows(params, onRows, path = "entries") {
  const onMainThread = async () => {
    const started = performance.now();
    const { entries, workers } = await getJson(path, params);
    const received = performance.now();
    const rows = entries.filter(isEntry).map(compact).sort((a, b) => a.ts - b.ts);
    const timing = { body_ms: received - started, rows_ms: performance.now() - received, worker_thread: false };
    onRows(rows);
    return { count: rows.length, workers, timing };
  };
  if (loaderFailed || !(loader || startLoader())) return onMainThread();
  return new Promise((resolve, reject) => {
    const id = ++nextLoad;
    pendingLoads.set(id, { onRows, resolve, reject, sent: performance.now(), fallback: () => onMainThread().then(resolve, reject) });
    loader.postMessage({ id, url: apiUrl(path, params) });
  });
}

export const api = {
  entries: (params, options) => getJson("entries", params, options),
  entry: (id, options) => getJson(`entries/${encodeURIComponent(id)}`, {}, options),
  validate: (q, options) => getJson("query/validate", { q }, options),
  status: (options) => getJson("status", {}, options),
  servicemap: (params, options) => getJson("servicemap", params, options),
  entryPcapUrl: (id) => apiUrl(`entries/${encodeURIComponent(id)}/pcap`),
  snapshot: (name, options) => getJson(`snapshots/${encodeURIComponent(name)}`, {}, options),
  snapshotEntriesPath: (name) => `snapshots/${encodeURIComponent(name)}/entries`,
  snapshotEntry: (name, id, options) => getJson(`snapshots/${encodeURIComponent(name)}/entries/${encodeURIComponent(id)}`, {}, options),
  snapshotPcapUrl: (name) => apiUrl(`snapshots/${encodeURIComponent(name)}/pcap`),
  pcapUrl: (q) => apiUrl("pcap", { q }),
  harUrl: (q) => apiUrl("har", { q }),
};
