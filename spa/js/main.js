// The page: wires the filter, the live feed, the list, the detail, the map and the stats, and
// keeps what is shareable (filter, view, open entry, opened snapshot) in the URL. An opened
// snapshot takes the live feed's place in the Traffic view: its saved entries, filtered by the
// same KFL, read-only, under a banner that leads back to live.

import { api, loadRows } from "./api.js";
import { $, h, replace } from "./dom.js";
import { DetailView } from "./detail.js";
import { EntryStore, MAX_KEPT } from "./entries.js";
import { FeedView } from "./feedview.js";
import { FilterBox, addClause } from "./filterbox.js";
import { count, dateTime } from "./format.js";
import { Health } from "./health.js";
import { LiveFeed } from "./live.js";
import { UNAUTHORIZED, loggedIn, showLogin } from "./login.js";
import { ServiceMap } from "./servicemap.js";
import { Snapshots } from "./snapshots.js";
import { renderTraffic, renderWorkers } from "./stats.js";

const DEFAULT_LIMIT = 2000;
const OLDER_BATCH = 2000;
const MAP_REFRESH_MS = 5000;
const STATS_REFRESH_MS = 2000;

const params = new URLSearchParams(location.search);
const state = {
  q: params.get("q") || "",
  view: params.get("view") || "traffic",
  entry: params.get("entry"),
  snapshot: params.get("snapshot") || null,   // the opened snapshot's name; null: live traffic
  limit: clampLimit(params.get("limit")),
  transport: ["sse", "ws"].includes(params.get("transport")) ? params.get("transport") : "auto",
  paused: false,
  held: [],          // entries that arrived while paused
  heldDropped: 0,
  generation: 0,     // bumps with every new filter: answers for an older one are dropped
  loads: 0,          // REST loads in flight
  loadLog: [],       // timings of the last loads
  lost: 0,
  partial: null,     // workers that failed the last load
  liveState: "connecting",
  liveTransport: "sse",
  liveDetail: "",
  upstreams: new Set(),   // workers whose stream the hub follows for this connection
};

function clampLimit(text) {
  const n = Number.parseInt(text || "", 10);
  return Number.isFinite(n) && n >= 1 ? Math.min(n, 100000) : DEFAULT_LIMIT;
}

const store = new EntryStore(MAX_KEPT);

const feed = new FeedView({
  viewport: $("#feed"),
  store,
  emptyText: () => (state.filterError ? `Nothing is shown: the filter is not valid KFL (${state.filterError}).`
    : state.loads ? "loading…"
    : state.snapshot ? `No entries of snapshot ${state.snapshot}${state.q ? ` match ${state.q}` : ""}.`
    : `No entries${state.q ? ` match ${state.q}` : ""} yet; new ones appear here as they are captured.`),
  onOpen: (id) => openEntry(id),
  onFollowChange: (follow, unseen) => {
    const jump = $("#jump");
    jump.hidden = follow;
    jump.textContent = unseen ? `${count(unseen)} new — jump to live` : "Jump to live";
  },
});

const detail = new DetailView({
  root: $("#detail"),
  onFilter: (clause) => applyFilter(addClause(filter.applied, clause)),
  onClose: () => { state.entry = null; writeUrl(false); document.body.classList.remove("with-detail"); $("#feed").focus(); },
});

const filter = new FilterBox({
  input: $("#kfl"), mirror: $("#kfl-mirror"), message: $("#kfl-message"), list: $("#kfl-list"),
  form: $("#kfl-form"), historyButton: $("#kfl-history"), examplesButton: $("#kfl-examples"),
  onApply: (q) => applyFilter(q),
});

const map = new ServiceMap({
  root: $("#map"),
  onFilter: (q) => { applyFilter(q); showView("traffic"); },
});

const health = new Health({
  banners: $("#banners"), pill: $("#workers-pill"),
  onChange: () => {
    if (state.view === "stats") renderWorkers($("#stats-workers"), health.status, health.hubUp === false ? health.hubError : null);
  },
});

let live = null;

// -- the filter, the feed ------------------------------------------------------------------------
function applyFilter(q, { push = true } = {}) {
  const changed = q !== state.q;
  state.q = q;
  if (filter.applied !== q || filter.value !== q) filter.set(q);
  if (push && changed) writeUrl(true);
  document.title = [q, state.snapshot && `snapshot ${state.snapshot}`, "kubectl-shark"].filter(Boolean).join(" — ");
  drawDownloads();
  restartFeed();
  if (state.view === "map") map.load(q);
}

function drawDownloads() {
  const pcap = $("#download-pcap");
  if (state.snapshot) {
    pcap.href = api.snapshotPcapUrl(state.snapshot);
    pcap.download = `${state.snapshot}.pcap`;
    pcap.setAttribute("aria-label", `Download pcap of snapshot ${state.snapshot}`);
  } else {
    pcap.href = api.pcapUrl(state.q);
    pcap.download = "shark.pcap";
    pcap.setAttribute("aria-label", "Download pcap of the filtered traffic");
  }
  $("#download-har").href = api.harUrl(state.q);
  $("#download-har").hidden = Boolean(state.snapshot);
}

/** The entries of the opened snapshot (shown in the Traffic view unless `view` is false), or
 *  live traffic again (name null). */
function setSnapshot(name, { push = true, view = true } = {}) {
  if (name === state.snapshot) return;
  if (state.entry) detail.close();   // first: closing rewrites the current URL, which is not the snapshot's
  state.snapshot = name;
  detail.snapshot = name;
  drawSnapshot();
  if (name && view) showView("traffic", { push: false });
  if (push) writeUrl(true);
  applyFilter(state.q, { push: false });
}

async function drawSnapshot() {
  const banner = $("#snapshot-banner");
  for (const id of ["pause", "clear"]) $(`#${id}`).disabled = Boolean(state.snapshot);
  if (!state.snapshot) {
    banner.hidden = true;
    replace(banner);
    return;
  }
  const name = state.snapshot;
  const back = h("button", { type: "button", class: "primary", onclick: () => setSnapshot(null) }, "Back to live");
  const say = (...text) => replace(banner, h("span", {}, ...text), back);
  banner.hidden = false;
  say(h("strong", {}, `Snapshot ${name}`), " — read-only: saved entries, not live traffic.");
  try {
    const meta = await api.snapshot(name);
    if (state.snapshot !== name) return;
    say(h("strong", {}, `Snapshot ${name}`), ` — read-only: ${count(meta.entries)} entries saved ${dateTime(meta.created)}`,
      meta.q ? ` (filter ${meta.q})` : "", ", not live traffic.");
  } catch (error) {
    if (state.snapshot !== name) return;
    say(h("strong", {}, `Snapshot ${name}`), h("span", { class: "warn" }, ` cannot be read: ${error.message}`));
  }
}

function restartFeed() {
  live?.stop();
  live = null;
  clearTimeout(resyncTimer);
  state.resyncPending = false;
  state.generation += 1;
  state.loads = 0;
  store.clear();
  state.held = [];
  state.heldDropped = 0;
  state.lost = 0;
  state.partial = null;
  state.filterError = null;
  feed.reset();
  if (state.snapshot) {          // saved entries only: nothing streams
    drawLiveState();
    loadRecent();
    return;
  }
  live = new LiveFeed({
    q: state.q,
    transport: state.transport,
    onEntries: receive,
    onWorkerStatus: (worker) => {
      const had = state.upstreams.size;
      if (worker.ok) state.upstreams.add(worker.url);
      else state.upstreams.delete(worker.url);
      // A worker's stream (re)joined: what it captured before that came through REST only.
      if (worker.ok) scheduleResync();
      if (had !== state.upstreams.size) drawLiveState();
      health.poll();
    },
    onLost: (lost) => {
      // null: the hub could not tell what was missed across a reconnect; reload recent entries
      if (lost.lost == null) scheduleResync();
      else { state.lost += lost.lost; drawCounts(); }
    },
    onTags: ({ id, tags }) => { if (store.setTags(id, tags)) feed.schedule(); },
    onState: (liveState, transport, detailText) => {
      if (liveState !== "live" || state.liveState !== "live") state.upstreams = new Set();
      Object.assign(state, { liveState, liveTransport: transport, liveDetail: detailText });
      drawLiveState();
      if (liveState === "reconnecting") health.poll();
    },
    onResync: () => scheduleResync(),
  });
  live.start();
  loadRecent();
}

const RESYNC_LIMIT = 5000;
let resyncTimer = null;
function scheduleResync() {
  clearTimeout(resyncTimer);
  state.resyncPending = true;   // busy from now: a load is coming
  drawCounts();
  resyncTimer = setTimeout(() => {
    state.resyncPending = false;
    loadRecent(Math.min(state.limit, RESYNC_LIMIT));
  }, 100);
}

/** The newest `limit` entries matching the filter, merged with what the stream brought
 *  (the store drops duplicates, so loads may overlap each other and the stream). */
async function loadRecent(limit = state.limit) {
  const generation = state.generation;
  const q = state.q;
  state.loads += 1;
  drawCounts();
  feed.schedule();
  try {
    let insertMs = 0;
    const answer = await loadRows({ q, limit }, (rows) => {
      if (generation !== state.generation) return;
      const started = performance.now();
      addRows(rows);
      insertMs += performance.now() - started;
    }, entriesPath());
    if (generation !== state.generation) return;
    state.partial = answer.workers.filter((w) => !w.ok);
    // how the last loads went, for devtools and the benchmark
    state.loadLog.push({ ...answer.timing, rows: answer.count, limit, q, insert_ms: insertMs,
                         total_ms: answer.timing.sent ? performance.now() - answer.timing.sent : null });
    if (state.loadLog.length > 20) state.loadLog.shift();
  } catch (error) {
    if (generation !== state.generation) return;
    // a 400 is the filter (from a URL: the box validates what is typed); anything else the hub
    if (error.status === 400) state.filterError = error.body?.detail || error.message;
    else state.partial = [{ node: "hub", error: error.message }];
  } finally {
    if (generation === state.generation) {
      state.loads -= 1;
      drawCounts();
      feed.schedule();
    }
  }
}

function entriesPath() {
  return state.snapshot ? api.snapshotEntriesPath(state.snapshot) : "entries";
}

async function loadOlder() {
  const oldest = store.oldest;
  const button = $("#older");
  button.disabled = true;
  try {
    // `until` is exclusive: a hair above the oldest row keeps rows that share its time
    const before = store.length;
    const generation = state.generation;
    await loadRows({ q: state.q, limit: OLDER_BATCH, ...(oldest ? { until: String(oldest.ts + 1e-6) } : {}) },
      (rows) => { if (generation === state.generation) addRows(rows); }, entriesPath());
    $("#feed-notice").textContent = store.length === before ? "no older entries" : "";
  } catch (error) {
    $("#feed-notice").textContent = `cannot load older entries: ${error.message}`;
  } finally {
    button.disabled = false;
  }
}

function receive(batch) {
  if (state.paused) {
    state.held.push(...batch);
    if (state.held.length > MAX_KEPT) {
      state.heldDropped += state.held.length - MAX_KEPT;
      state.held.splice(0, state.held.length - MAX_KEPT);
    }
    drawCounts();
    return;
  }
  addEntries(batch);
}

function addEntries(entries) {
  changed(store.add(entries));
}

function addRows(rows) {
  changed(store.addRows(rows));
}

function changed(change) {
  if (change.added || change.removed || change.prepended) {
    feed.changed(change);
    drawCounts();
  }
}

function setPaused(paused) {
  state.paused = paused;
  const button = $("#pause");
  button.setAttribute("aria-pressed", String(paused));
  button.textContent = paused ? "Resume" : "Pause";
  if (!paused && state.held.length) {
    const held = state.held;
    state.held = [];
    addEntries(held);
  }
  drawCounts();
  drawLiveState();
}

function drawCounts() {
  $("#feed").setAttribute("aria-busy", state.loads > 0 || state.resyncPending ? "true" : "false");
  const parts = [`${count(store.length)} entries`];
  if (store.trimmed) parts.push(`${count(store.trimmed)} oldest dropped (the page keeps ${count(store.maxKept)})`);
  replace($("#feed-count"), parts.join(" · "));
  const notices = [];
  if (state.paused) notices.push(`paused — ${count(state.held.length)} new${state.heldDropped ? `, ${count(state.heldDropped)} dropped` : ""}`);
  if (state.lost) {
    notices.push(h("span", { class: "warn" }, `the hub dropped ${count(state.lost)} live entries (this page fell behind) `,
      h("button", { type: "button", onclick: () => { state.lost = 0; drawCounts(); loadRecent(); } }, "fetch them")));
  }
  if (state.partial?.length) {
    notices.push(h("span", { class: "warn" }, `partial: ${state.partial.map((w) => `${w.node || w.url}: ${w.error}`).join("; ")}`));
  }
  replace($("#feed-notice"), notices.flatMap((n, i) => (i ? [" · ", n] : [n])));
}

function drawLiveState() {
  const el = $("#live-state");
  const transport = state.liveTransport === "ws" ? "WebSocket" : "SSE";
  let text;
  let cls;
  if (state.snapshot) { text = "snapshot (not live)"; cls = "st-redirect"; }
  else if (state.paused) { text = "paused"; cls = "st-redirect"; }
  else if (state.liveState === "live" && state.upstreams.size) { text = `live (${transport})`; cls = "st-ok"; }
  else if (state.liveState === "live") { text = `connected (${transport}), no worker streaming`; cls = "st-client"; }
  else if (state.liveState === "error") { text = "stream refused"; cls = "st-error"; }
  else if (state.liveState === "reconnecting") { text = "reconnecting…"; cls = "st-client"; }
  else { text = "connecting…"; cls = "st-none"; }
  el.textContent = text;
  el.className = `pill ${cls}`;
  el.title = state.liveDetail || "";
}

// -- detail ---------------------------------------------------------------------------------------
function openEntry(id) {
  state.entry = id;
  feed.select(id);
  document.body.classList.add("with-detail");
  writeUrl(false);
  detail.open(id);
}

// -- views ------------------------------------------------------------------------------------------
let mapTimer = null;
let statsTimer = null;

function showView(view, { push = true } = {}) {
  if (!["traffic", "map", "stats", "snapshots"].includes(view)) view = "traffic";
  const changed = view !== state.view;
  state.view = view;
  for (const tab of document.querySelectorAll("[role=tab]")) {
    const selected = tab.dataset.view === view;
    tab.setAttribute("aria-selected", String(selected));
    tab.tabIndex = selected ? 0 : -1;
    $(`#${tab.getAttribute("aria-controls")}`).hidden = !selected;
  }
  clearInterval(mapTimer);
  clearInterval(statsTimer);
  if (view === "map") {
    map.load(state.q);
    mapTimer = setInterval(() => { if ($("#map-auto").checked) map.refresh(state.q); }, MAP_REFRESH_MS);
  } else if (view === "snapshots") {
    snapshots.load();
  } else if (view === "stats") {
    let drawn = -1;
    const draw = () => {
      if (drawn === store.version) return;   // nothing new: 200k rows are not re-counted for nothing
      drawn = store.version;
      renderTraffic($("#stats-traffic"), store.items);
    };
    draw();
    renderWorkers($("#stats-workers"), health.status, health.hubUp === false ? health.hubError : null);
    statsTimer = setInterval(draw, STATS_REFRESH_MS);
  } else {
    feed.schedule();
  }
  if (push && changed) writeUrl(true);
}

function writeUrl(push) {
  const url = new URL(location.href);
  const set = (name, value) => (value ? url.searchParams.set(name, value) : url.searchParams.delete(name));
  set("q", state.q);
  set("view", state.view === "traffic" ? "" : state.view);
  set("entry", state.entry);
  set("snapshot", state.snapshot);
  if (push) history.pushState(null, "", url);
  else history.replaceState(null, "", url);
}

window.addEventListener("popstate", () => {
  const next = new URLSearchParams(location.search);
  const q = next.get("q") || "";
  const snapshot = next.get("snapshot") || null;
  if (snapshot !== state.snapshot) {
    state.q = q;
    setSnapshot(snapshot, { push: false });
  } else if (q !== state.q) applyFilter(q, { push: false });
  showView(next.get("view") || "traffic", { push: false });
  const entry = next.get("entry");
  if (entry && entry !== state.entry) openEntry(entry);
  else if (!entry && state.entry) detail.close();
});

// -- theme ------------------------------------------------------------------------------------------
function drawTheme() {
  const dark = document.documentElement.dataset.theme === "dark";
  $("#theme").setAttribute("aria-label", dark ? "Switch to light theme" : "Switch to dark theme");
}

$("#theme").addEventListener("click", () => {
  const next = document.documentElement.dataset.theme === "dark" ? "light" : "dark";
  document.documentElement.dataset.theme = next;
  try { localStorage.setItem("shark.theme", next); } catch { /* private mode */ }
  drawTheme();
});

// -- keyboard ---------------------------------------------------------------------------------------
function typing(target) {
  return target instanceof HTMLElement && (target.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName));
}

document.addEventListener("keydown", (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey || typing(event.target) || $("#help-dialog").open) return;
  const key = event.key;
  if (key === "/") { event.preventDefault(); filter.focus(); }
  else if (key === "?") { event.preventDefault(); $("#help-dialog").showModal(); }
  else if (["1", "2", "3", "4"].includes(key)) showView(["traffic", "map", "stats", "snapshots"][Number(key) - 1]);
  else if (state.view !== "traffic") return;
  else if (key === "j" || key === "ArrowDown") { event.preventDefault(); feed.move(1); }
  else if (key === "k" || key === "ArrowUp") { event.preventDefault(); feed.move(-1); }
  else if (key === "Enter" && feed.selectedId && !(event.target instanceof HTMLButtonElement || event.target instanceof HTMLAnchorElement)) {
    event.preventDefault();
    openEntry(feed.selectedId);
  } else if (key === "Escape" && state.entry) detail.close();
  else if (key === "p" && !state.snapshot) setPaused(!state.paused);
  else if (key === "G") feed.jumpToLive();
});

// -- controls ---------------------------------------------------------------------------------------
$("#pause").addEventListener("click", () => setPaused(!state.paused));
$("#order").addEventListener("click", () => {
  const order = feed.order === "bottom" ? "top" : "bottom";
  setOrder(order);
  try { localStorage.setItem("shark.order", order); } catch { /* private mode */ }
});
$("#older").addEventListener("click", () => loadOlder());
$("#clear").addEventListener("click", () => { store.clear(); state.lost = 0; feed.reset(); drawCounts(); });
$("#jump").addEventListener("click", () => feed.jumpToLive());
$("#help").addEventListener("click", () => $("#help-dialog").showModal());
$("#workers-pill").addEventListener("click", () => showView("stats"));
const snapshots = new Snapshots($("#snapshot-list"), $("#snapshot-message"), (name) => setSnapshot(name),
  (name) => { if (state.snapshot === name) setSnapshot(null, { view: false }); });
$("#snapshot-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const since = Date.now() / 1000 - Number($("#snapshot-since").value);
  snapshots.create(state.q, since, $("#snapshot-name").value.trim());
});
$("#map-refresh").addEventListener("click", () => map.load(state.q));
for (const tab of document.querySelectorAll("[role=tab]")) tab.addEventListener("click", () => showView(tab.dataset.view));

function setOrder(order) {
  feed.setOrder(order);
  $("#order").textContent = order === "bottom" ? "Newest at bottom" : "Newest on top";
}

// -- start ------------------------------------------------------------------------------------------
let storedOrder = null;
try { storedOrder = localStorage.getItem("shark.order"); } catch { /* private mode */ }
setOrder([params.get("order"), storedOrder].find((order) => order === "top" || order === "bottom") || "bottom");
drawTheme();
filter.set(state.q);
// The hub refused this page (no session yet, or a new token since): stop asking, ask for the token.
window.addEventListener(UNAUTHORIZED, () => {
  live?.stop();
  health.stop();
  showLogin();
});
if (await loggedIn()) {
  health.start();
  detail.snapshot = state.snapshot;
  drawSnapshot();
  applyFilter(state.q, { push: false });
  showView(state.view, { push: false });
  if (state.entry) openEntry(state.entry);
}

// For the browser tests and benchmarks, and for poking at the page from devtools.
window.shark = { state, store, feed, filter, health, addEntries, applyFilter, setSnapshot, get live() { return live; } };
