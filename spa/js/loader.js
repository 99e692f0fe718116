// A module worker that fetches GET /api/v1/entries, parses it and makes the compact rows, so
// a load of 100k entries (tens of MB of JSON) does not freeze the page while it is parsed.
// The rows go back in chunks: receiving a message costs the page's thread time in proportion
// to its size (structured clone), and 100k rows in one message held it for most of a second.
// Message in: {id, url}; out: {id, rows} per chunk, then {id, done, workers, timing}, or
// {id, error: {status, detail}}.

const CHUNK = 2000;

import { compact, isEntry } from "./entries.js";

self.onmessage = async ({ data: { id, url } }) => {
  const started = performance.now();
  let response;
  try {
    response = await fetch(url, { headers: { Accept: "application/json" } });
  } catch (error) {
    self.postMessage({ id, error: { status: null, detail: `cannot reach the hub (${error.message})` } });
    return;
  }
  const headers = performance.now();
  const text = await response.text();
  const received = performance.now();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch { body = null; }
  if (!response.ok || !body || !Array.isArray(body.entries)) {
    const detail = body && body.detail ? body.detail : text.slice(0, 200) || response.statusText;
    self.postMessage({ id, error: { status: response.status, detail: `${response.status} ${detail}`, body } });
    return;
  }
  const parsed = performance.now();
  const rows = [];
  for (const entry of body.entries) if (isEntry(entry)) rows.push(compact(entry));
  rows.sort((a, b) => a.ts - b.ts);
  const timing = { headers_ms: headers - started, body_ms: received - headers, parse_ms: parsed - received,
                   rows_ms: performance.now() - parsed, chars: text.length, worker_thread: true };
  for (let start = 0; start < rows.length; start += CHUNK) self.postMessage({ id, rows: rows.slice(start, start + CHUNK) });
  self.postMessage({ id, done: true, count: rows.length, workers: body.workers || [], timing });
};
