// The entries the page holds: compact rows (no headers, no bodies) kept in time order,
// de-duplicated by id and capped, so 100k+ entries stay cheap. Details are fetched on demand.

import { statusClass, statusText } from "./format.js";

export const MAX_KEPT = 200_000;

/** The fields a row, the stats and the map need; everything else is dropped at once. */
export function compact(entry) {
  return {
    id: entry.id,
    node: entry.node,
    ts: entry.ts,
    protocol: entry.protocol,
    src: entry.src,
    dst: entry.dst,
    summary: entry.summary || "",
    status: entry.status ?? null,
    statusText: statusText(entry),
    cls: statusClass(entry),
    elapsed: entry.elapsed_ms ?? null,
    size: (entry.size?.request || 0) + (entry.size?.response || 0),
    tags: Array.isArray(entry.tags) && entry.tags.length ? entry.tags : null,
    complete: entry.complete !== false,
    tls: !!entry.tls,
  };
}

export class EntryStore {
  constructor(maxKept = MAX_KEPT) {
    this.maxKept = maxKept;
    this.items = [];            // ascending by ts
    this.ids = new Set();
    this.trimmed = 0;           // rows dropped at the old end because of the cap
    this.version = 0;           // bumps on every change, so views know to redraw
  }

  get length() { return this.items.length; }
  get oldest() { return this.items[0] || null; }
  get newest() { return this.items[this.items.length - 1] || null; }

  clear() {
    this.items = [];
    this.ids = new Set();
    this.trimmed = 0;
    this.version += 1;
  }

  /** Add raw entries (any order); returns {added, removed, prepended}: rows new at the
   *  newest end, rows dropped at the oldest end, rows that went in before the newest row. */
  add(entries) {
    const fresh = [];
    for (const entry of entries) {
      if (!isEntry(entry) || this.ids.has(entry.id)) continue;
      this.ids.add(entry.id);
      fresh.push(compact(entry));
    }
    return this.insert(fresh);
  }

  /** Add rows already made by compact() (by the loader off the main thread). */
  addRows(rows) {
    const fresh = [];
    for (const row of rows) {
      if (this.ids.has(row.id)) continue;
      this.ids.add(row.id);
      fresh.push(row);
    }
    return this.insert(fresh);
  }

  insert(fresh) {
    if (!fresh.length) return { added: 0, removed: 0, prepended: 0 };
    if (!isSorted(fresh)) fresh.sort((a, b) => a.ts - b.ts);
    const last = this.newest;
    let prepended = 0;
    if (!last || fresh[0].ts >= last.ts) {
      for (const row of fresh) this.items.push(row);
    } else {
      for (const row of fresh) if (row.ts < last.ts) prepended += 1;
      this.items = merge(this.items, fresh);
    }
    const removed = this.trim();
    this.version += 1;
    return { added: fresh.length - prepended, removed, prepended };
  }

  /** Drop the oldest rows above the cap, in chunks so a busy feed does not shift every time. */
  trim() {
    if (this.items.length <= this.maxKept) return 0;
    const excess = this.items.length - Math.floor(this.maxKept * 0.95);
    for (const row of this.items.slice(0, excess)) this.ids.delete(row.id);
    this.items.splice(0, excess);
    this.trimmed += excess;
    return excess;
  }

  /** A script tagged an entry after it arrived: its row gets the new tags (a new object, so
   *  the view sees it changed). False when the page does not hold that entry. */
  setTags(id, tags) {
    if (!this.ids.has(id)) return false;
    const i = this.indexOf(id);
    if (i < 0) return false;
    this.items[i] = { ...this.items[i], tags: Array.isArray(tags) && tags.length ? tags : null };
    this.version += 1;
    return true;
  }

  indexOf(id) {
    for (let i = this.items.length - 1; i >= 0; i -= 1) if (this.items[i].id === id) return i;
    return -1;
  }
}

export function isEntry(entry) {
  return !!entry && typeof entry.id === "string" && typeof entry.ts === "number";
}

function isSorted(rows) {
  for (let i = 1; i < rows.length; i += 1) if (rows[i - 1].ts > rows[i].ts) return false;
  return true;
}

function merge(a, b) {
  const out = new Array(a.length + b.length);
  let i = 0; let j = 0; let k = 0;
  while (i < a.length && j < b.length) out[k++] = a[i].ts <= b[j].ts ? a[i++] : b[j++];
  while (i < a.length) out[k++] = a[i++];
  while (j < b.length) out[k++] = b[j++];
  return out;
}
