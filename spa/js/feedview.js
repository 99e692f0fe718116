// The traffic feed as a virtualized grid: only the rows in view (plus a margin) exist in the
// DOM, drawn from a small pool of reused row elements, so 100k entries scroll like 100.
// Newest on top or at the bottom; the view follows the live end until the user scrolls away.

import { h } from "./dom.js";
import { bytes, clock, endpoint, millis } from "./format.js";

export const ROW_HEIGHT = 28;
const OVERSCAN = 12;
const COLUMNS = [
  ["time", "Time"], ["proto", "Protocol"], ["src", "Source"], ["dst", "Destination"],
  ["summary", "Summary"], ["status", "Status"], ["elapsed", "Elapsed"], ["size", "Size"],
];

function headerRow() {
  return h("div", { class: "feed-head-group", role: "rowgroup" },
    h("div", { class: "feed-row feed-head", role: "row", "aria-rowindex": 1 },
      COLUMNS.map(([key, label]) => h("span", { class: `c-${key}`, role: "columnheader" }, label))));
}

export class FeedView {
  /** viewport: the scrolling element (role=grid); store: an EntryStore. */
  constructor({ viewport, store, emptyText, onOpen, onFollowChange }) {
    this.viewport = viewport;
    this.store = store;
    this.onOpen = onOpen;
    this.onFollowChange = onFollowChange;
    this.emptyText = emptyText;
    this.order = "bottom";
    this.follow = true;
    this.unseen = 0;            // rows that arrived while not following
    this.selectedId = null;
    this.pool = [];
    this.anchor = null;         // {row, offset}: what the user looks at, kept in place on updates
    this.frame = 0;
    this.header = headerRow();   // sticky, inside the grid; rows start below it
    this.spacer = h("div", { class: "feed-spacer", role: "rowgroup" });
    this.empty = h("div", { class: "feed-empty", role: "status" });
    viewport.append(this.header, this.spacer, this.empty);
    viewport.addEventListener("scroll", () => this.onScroll(), { passive: true });
    new ResizeObserver(() => this.schedule()).observe(viewport);
    this.spacer.addEventListener("click", (event) => {
      const row = event.target.closest(".feed-row");
      if (row && row._item) {
        this.select(row._item.id);
        this.onOpen?.(row._item.id);
      }
    });
  }

  get length() { return this.store.length; }

  /** The row shown at display position i. */
  rowAt(i) {
    const items = this.store.items;
    return this.order === "bottom" ? items[i] : items[items.length - 1 - i];
  }

  displayIndexOf(row) {
    const index = findIndex(this.store.items, row);
    if (index < 0) return -1;
    return this.order === "bottom" ? index : this.store.items.length - 1 - index;
  }

  setOrder(order) {
    if (order === this.order) return;
    this.order = order;
    this.setFollow(true);
    this.scrollToLive();
    this.schedule();
  }

  atLiveEnd() {
    const { scrollTop, clientHeight, scrollHeight } = this.viewport;
    return this.order === "bottom" ? scrollTop + clientHeight >= scrollHeight - ROW_HEIGHT / 2
                                   : scrollTop <= ROW_HEIGHT / 2;
  }

  setFollow(follow) {
    if (follow === this.follow) return;
    this.follow = follow;
    if (follow) this.unseen = 0;
    this.onFollowChange?.(follow, this.unseen);
  }

  onScroll() {
    this.setFollow(this.atLiveEnd());
    this.captureAnchor();
    this.schedule();
  }

  scrollToLive() {
    this.spacer.style.height = `${this.length * ROW_HEIGHT}px`;
    this.viewport.scrollTop = this.order === "bottom" ? this.viewport.scrollHeight : 0;
  }

  jumpToLive() {
    this.setFollow(true);
    this.scrollToLive();
    this.schedule();
  }

  /** After the store changed: keep following the live end, or keep the anchor row in place. */
  changed({ added = 0 } = {}) {
    this.spacer.style.height = `${this.length * ROW_HEIGHT}px`;
    if (this.follow) {
      this.scrollToLive();
    } else {
      this.unseen += added;
      this.onFollowChange?.(false, this.unseen);
      if (this.anchor) {
        const index = this.displayIndexOf(this.anchor.row);
        if (index >= 0) this.viewport.scrollTop = index * ROW_HEIGHT + this.anchor.offset;
      }
    }
    this.schedule();
  }

  /** After the store was cleared (a new filter). */
  reset() {
    this.anchor = null;
    this.unseen = 0;
    this.follow = false;
    this.setFollow(true);
    this.scrollToLive();
    this.schedule();
  }

  captureAnchor() {
    const first = Math.floor(this.viewport.scrollTop / ROW_HEIGHT);
    const row = first < this.length ? this.rowAt(first) : null;
    this.anchor = row ? { row, offset: this.viewport.scrollTop - first * ROW_HEIGHT } : null;
  }

  schedule() {
    if (!this.frame) this.frame = requestAnimationFrame(() => { this.frame = 0; this.draw(); });
  }

  /** Draw now (also used by the benchmark to time one frame's work). */
  draw() {
    const n = this.length;
    this.viewport.setAttribute("aria-rowcount", String(n + 1));
    this.spacer.style.height = `${n * ROW_HEIGHT}px`;
    this.empty.hidden = n > 0;
    if (!n) this.empty.textContent = this.emptyText();
    const top = this.viewport.scrollTop;
    const height = (this.viewport.clientHeight || 600) - this.header.offsetHeight;
    const first = Math.max(0, Math.floor(top / ROW_HEIGHT) - OVERSCAN);
    const last = Math.min(n - 1, Math.ceil((top + height) / ROW_HEIGHT) + OVERSCAN);
    const needed = Math.max(0, last - first + 1);
    while (this.pool.length < needed) {
      const row = makeRow();
      this.pool.push(row);
      this.spacer.append(row);
    }
    for (let k = 0; k < this.pool.length; k += 1) {
      const row = this.pool[k];
      const i = first + k;
      if (i > last) {
        if (!row.hidden) { row.hidden = true; row._item = null; }
        continue;
      }
      row.hidden = false;
      fillRow(row, this.rowAt(i), i, this.selectedId);
    }
    if (!this.anchor) this.captureAnchor();
  }

  select(id) {
    this.selectedId = id;
    this.schedule();
  }

  /** j/k: move the selection by `delta` rows in display order and keep it in view. */
  move(delta) {
    const n = this.length;
    if (!n) return null;
    let index = -1;
    if (this.selectedId !== null) {
      const storeIndex = this.store.indexOf(this.selectedId);
      if (storeIndex >= 0) index = this.order === "bottom" ? storeIndex : n - 1 - storeIndex;
    }
    if (index < 0) {
      // nothing selected yet: start at the first row in view
      index = Math.min(n - 1, Math.ceil(this.viewport.scrollTop / ROW_HEIGHT));
    } else {
      index = Math.max(0, Math.min(n - 1, index + delta));
    }
    const row = this.rowAt(index);
    this.select(row.id);
    this.scrollIntoView(index);
    return row.id;
  }

  scrollIntoView(index) {
    const top = index * ROW_HEIGHT;   // in the spacer, which starts below the sticky header
    const { scrollTop, clientHeight } = this.viewport;
    const visible = clientHeight - this.header.offsetHeight;
    if (top < scrollTop) this.viewport.scrollTop = top;
    else if (top + ROW_HEIGHT > scrollTop + visible) this.viewport.scrollTop = top + ROW_HEIGHT - visible;
  }
}

/** The index of `row` in `items` (ascending ts): binary search on ts, then the id among ties. */
function findIndex(items, row) {
  let lo = 0;
  let hi = items.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (items[mid].ts < row.ts) lo = mid + 1; else hi = mid;
  }
  for (let i = lo; i < items.length && items[i].ts === row.ts; i += 1) if (items[i] === row) return i;
  return -1;
}

function makeRow() {
  const cells = {};
  const row = h("div", { class: "feed-row", role: "row" });
  for (const [key] of COLUMNS) {
    cells[key] = h("span", { class: `c-${key}`, role: "gridcell" });
    row.append(cells[key]);
  }
  cells.summaryText = h("span", { class: "summary-text" });
  cells.tags = h("span", { class: "tags" });
  cells.summary.append(cells.summaryText, cells.tags);
  row._cells = cells;
  row._item = null;
  row._selected = false;
  return row;
}

function fillRow(row, item, index, selectedId) {
  const selected = item.id === selectedId;
  row.style.transform = `translateY(${index * ROW_HEIGHT}px)`;
  row.setAttribute("aria-rowindex", String(index + 2));
  if (row._item === item && row._selected === selected) return;
  const c = row._cells;
  if (row._item !== item) {
    row._item = item;
    row.dataset.id = item.id;
    c.time.textContent = clock(item.ts);
    c.proto.textContent = item.protocol.toUpperCase();
    c.proto.className = `c-proto proto proto-${item.protocol}`;
    c.src.textContent = endpoint(item.src, false);
    c.src.title = describeEndpoint(item.src);
    c.dst.textContent = endpoint(item.dst);
    c.dst.title = describeEndpoint(item.dst);
    c.summaryText.textContent = item.summary;
    c.tags.replaceChildren(...(item.tags || []).map((tag) => h("span", { class: "tag" }, tag)));
    c.status.textContent = item.statusText;
    c.status.className = `c-status st-${item.cls}`;
    c.elapsed.textContent = millis(item.elapsed);
    c.size.textContent = bytes(item.size);
    row.classList.toggle("incomplete", !item.complete);
  }
  row._selected = selected;
  row.classList.toggle("selected", selected);
  row.setAttribute("aria-selected", selected ? "true" : "false");
}

function describeEndpoint(ep) {
  if (!ep) return "";
  const parts = [`${ep.ip}:${ep.port}`];
  if (ep.name) parts.push(`${ep.kind || "name"} ${ep.namespace ? `${ep.namespace}/` : ""}${ep.name}`);
  return parts.join(" — ");
}
