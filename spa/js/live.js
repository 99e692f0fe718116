// The live feed: Server-Sent Events from /api/v1/stream, with the WebSocket /api/v1/ws as the
// fallback when SSE does not get through (a proxy that blocks or buffers it). Entries are handed
// over in batches, at most every FLUSH_MS, so a busy cluster costs one redraw per batch.

import { apiUrl, wsUrl } from "./api.js";

const SSE_OPEN_TIMEOUT_MS = 5000;
const FLUSH_MS = 60;
const BACKOFF_MS = [500, 10000];

export class LiveFeed {
  /**
   * q: the KFL query; transport: "auto" (SSE, WebSocket when SSE fails), "sse" or "ws".
   * Callbacks: onEntries(batch), onWorkerStatus({node, url, ok, error}), onLost(n),
   * onState(state, transport, detail) with state in connecting|live|reconnecting|error,
   * onResync() after a reconnect, when entries may have been missed in between.
   */
  constructor({ q, transport = "auto", onEntries, onWorkerStatus, onLost, onState, onResync }) {
    this.q = q || "";
    this.transport = transport;
    this.handlers = { onEntries, onWorkerStatus, onLost, onState, onResync };
    this.pending = [];
    this.flushTimer = null;
    this.retryTimer = null;
    this.attempts = 0;
    this.connected = false;
    this.everConnected = false;
    this.sseBroken = transport === "ws";
    this.stopped = true;
    this.current = null;   // {kind, close()}
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    clearTimeout(this.flushTimer);
    this.flushTimer = null;
    this.pending = [];
    if (this.current) this.current.close();
    this.current = null;
  }

  connect() {
    if (this.stopped) return;
    this.setState("connecting", this.sseBroken ? "ws" : "sse");
    if (this.sseBroken || this.transport === "ws") this.connectWs(false);
    else this.connectSse();
  }

  connectSse() {
    const source = new EventSource(apiUrl("stream", { q: this.q }));
    let opened = false;
    const openTimer = setTimeout(() => { if (!opened) fail("no answer within 5 s"); }, SSE_OPEN_TIMEOUT_MS);
    const close = () => { clearTimeout(openTimer); source.close(); };
    this.current = { kind: "sse", close };
    const fail = (why) => {
      close();
      if (this.stopped || this.current?.close !== close) return;
      if (!opened && this.transport === "auto") {
        this.connectWs(true, why);
      } else {
        this.retry(`event stream failed: ${why}`);
      }
    };
    source.onopen = () => {
      opened = true;
      clearTimeout(openTimer);
      this.opened("sse");
    };
    source.addEventListener("entry", (event) => this.queue(event.data));
    source.addEventListener("status", (event) => this.handlers.onWorkerStatus?.(JSON.parse(event.data)));
    source.addEventListener("lost", (event) => this.handlers.onLost?.(JSON.parse(event.data)));
    source.addEventListener("tags", (event) => this.handlers.onTags?.(JSON.parse(event.data)));
    source.onerror = () => {
      if (opened && source.readyState === EventSource.CONNECTING) {
        // The browser reconnects by itself and sends Last-Event-ID: the hub resumes from there.
        this.connected = false;
        this.setState("reconnecting", "sse", "connection lost; reconnecting");
        return;
      }
      fail(opened ? "the hub closed the stream" : "the hub refused the stream");
    };
  }

  connectWs(fallback, why = "") {
    let socket;
    try {
      socket = new WebSocket(wsUrl("ws"));
    } catch (error) {
      this.retry(`WebSocket: ${error.message}`);
      return;
    }
    let opened = false;
    const close = () => socket.close();
    this.current = { kind: "ws", close };
    socket.onopen = () => {
      opened = true;
      socket.send(this.q);
      if (fallback) this.sseBroken = true;   // SSE failed where the WebSocket works: keep to it
      this.opened("ws", fallback ? `server-sent events failed (${why}); using the WebSocket` : "");
    };
    socket.onmessage = (message) => {
      let decoded;
      try { decoded = JSON.parse(message.data); } catch { return; }
      const { type, payload } = decoded || {};
      if (type === "entry") this.queuePayload(payload);
      else if (type === "status") this.handlers.onWorkerStatus?.(payload);
      else if (type === "lost") this.handlers.onLost?.(payload);
      else if (type === "tags") this.handlers.onTags?.(payload);
      else if (type === "error") this.setState("error", "ws", payload?.detail || "the hub refused the query");
    };
    socket.onclose = (event) => {
      if (this.stopped || this.current?.close !== close) return;
      this.connected = false;
      if (event.code === 1008) return;   // the query was refused; "error" state already set
      this.retry(opened ? "WebSocket closed" : "cannot open the event stream or the WebSocket");
    };
  }

  opened(kind, detail = "") {
    const resync = this.everConnected;
    this.connected = true;
    this.everConnected = true;
    this.attempts = 0;
    this.setState("live", kind, detail);
    if (resync) this.handlers.onResync?.();
  }

  retry(why) {
    if (this.stopped) return;
    this.connected = false;
    const delay = Math.min(BACKOFF_MS[0] * 2 ** this.attempts, BACKOFF_MS[1]);
    this.attempts += 1;
    this.setState("reconnecting", this.current?.kind || "sse", `${why}; retrying in ${(delay / 1000).toFixed(1)} s`);
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  setState(state, transport, detail = "") {
    this.state = state;
    this.handlers.onState?.(state, transport, detail);
  }

  queue(data) {
    let entry;
    try { entry = JSON.parse(data); } catch { return; }
    this.queuePayload(entry);
  }

  queuePayload(entry) {
    this.pending.push(entry);
    if (this.flushTimer === null) this.flushTimer = setTimeout(() => this.flush(), FLUSH_MS);
  }

  flush() {
    this.flushTimer = null;
    const batch = this.pending;
    this.pending = [];
    if (batch.length && !this.stopped) this.handlers.onEntries?.(batch);
  }
}
