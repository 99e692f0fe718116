// How values look in the UI: times, sizes, durations, endpoints, status classes.

const HTTP_LIKE = new Set(["http", "http2", "websocket"]);
// Status 0 is success, anything else an error (hub/servicemap.py ZERO_IS_OK, DNS's rcode too).
const ZERO_IS_OK = new Set(["grpc", "dns", "postgres", "mysql", "redis"]);
const DATABASES = new Set(["postgres", "mysql", "redis"]);

/**
 * The colour class of an entry's outcome, as the service map counts errors (hub/servicemap.py):
 * a failed connection (tcp.failure, udp.failure) is an error; HTTP-like by status class; gRPC, DNS
 * and the databases by their status (0 is success); any protocol whose
 * response carries `error` is an error; no response at all is "none".
 */
export function statusClass(entry) {
  const { protocol, status, response } = entry;
  if (failureOf(entry)) return "error";
  if (response && response.error) return "error";
  if (HTTP_LIKE.has(protocol) && typeof status === "number") {
    if (status >= 500) return "error";
    if (status >= 400) return "client";
    if (status >= 300) return "redirect";
    if (status >= 200) return "ok";
    return "info";
  }
  if (ZERO_IS_OK.has(protocol) && typeof status === "number") {
    return status === 0 ? "ok" : "error";
  }
  if (response === null || response === undefined || entry.elapsed_ms === null) return "none";
  return "ok";
}

export const STATUS_CLASS_LABELS = {
  ok: "success", info: "informational", redirect: "redirect", client: "client error (4xx)",
  error: "error", none: "no response",
};

const pad = (n, width = 2) => String(n).padStart(width, "0");

/** 13:04:05.123 in local time. */
export function clock(ts) {
  const d = new Date(ts * 1000);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

/** 2026-11-26 13:04:05.123456 (local time, microseconds from the epoch seconds). */
export function dateTime(ts) {
  const d = new Date(ts * 1000);
  const micros = Math.round((ts - Math.floor(ts)) * 1e6) % 1e6;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} `
    + `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(micros, 6)}`;
}

export function bytes(n) {
  if (typeof n !== "number" || !Number.isFinite(n)) return "";
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let value = n / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
  return `${value < 10 ? value.toFixed(1) : Math.round(value)} ${units[unit]}`;
}

export function millis(ms) {
  if (typeof ms !== "number" || !Number.isFinite(ms)) return "";
  if (ms < 1) return `${ms.toFixed(2)} ms`;
  if (ms < 1000) return `${ms < 10 ? ms.toFixed(1) : Math.round(ms)} ms`;
  return `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
}

export function count(n) {
  return typeof n === "number" ? n.toLocaleString("en-US") : "";
}

export function percent(ratio) {
  if (typeof ratio !== "number") return "";
  const value = ratio * 100;
  return `${value === 0 || value >= 10 ? Math.round(value) : value.toFixed(1)}%`;
}

export function duration(seconds) {
  if (typeof seconds !== "number") return "";
  if (seconds < 60) return `${Math.round(seconds)}s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m ${Math.round(seconds % 60)}s`;
  return `${Math.floor(seconds / 3600)}h ${Math.floor((seconds % 3600) / 60)}m`;
}

/** "frontend.shop" when the resolver named it, else "10.0.0.7:8080". */
export function endpoint(ep, withPort = true) {
  if (!ep) return "";
  if (ep.name) return ep.namespace ? `${ep.name}.${ep.namespace}` : ep.name;
  const host = String(ep.ip || "?").includes(":") ? `[${ep.ip}]` : ep.ip;
  return withPort && ep.port !== undefined && ep.port !== null ? `${host}:${ep.port}` : host;
}

/** The status column: HTTP status, DNS rcode name, "ERR" for an error without status. */
/** refused, reset, timeout or abandoned when the entry's connection failed (worker/connections.py). */
export function failureOf(entry) {
  return (entry.tcp && entry.tcp.failure) || (entry.udp && entry.udp.failure) || null;
}

export function statusText(entry) {
  const failure = failureOf(entry);
  if (failure && typeof entry.status !== "number") return failure;
  if (typeof entry.status === "number") {
    if (entry.protocol === "dns" && entry.response && entry.response.rcode) return entry.response.rcode;
    if (DATABASES.has(entry.protocol)) return databaseStatus(entry);
    return String(entry.status);
  }
  if (entry.response && entry.response.error) return "ERR";
  return entry.response ? "" : "—";
}

/** A database reply's outcome: OK, the SQLSTATE (postgres), the ERR code (mysql) or the
 *  error's first word (redis: ERR, WRONGTYPE, ...). */
function databaseStatus(entry) {
  if (entry.status === 0) return "OK";
  const error = entry.response && entry.response.error;
  if (entry.protocol === "postgres" && error && error.code) return String(error.code);
  if (entry.protocol === "redis" && typeof error === "string") return error.split(" ")[0] || "ERR";
  return String(entry.status);
}

/** "1 connection", "3 connections" (with thousands separators). */
export function plural(n, one, many = `${one}s`) {
  return `${count(n)} ${n === 1 ? one : many}`;
}
