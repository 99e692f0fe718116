// Is the hub there, and are its workers well? Polls GET /api/v1/status (and at once when the
// live stream reports a worker going up or down) and says so in banners everyone sees.

import { api } from "./api.js";
import { h, replace } from "./dom.js";

const POLL_MS = 3000;
const TIMEOUT_MS = 4000;

export class Health {
  constructor({ banners, pill, onChange }) {
    this.banners = banners;
    this.pill = pill;
    this.onChange = onChange;
    this.status = null;
    this.hubError = null;      // why the hub did not answer, while it does not
    this.hubUp = null;
    this.timer = null;
    this.inflight = null;
  }

  start() { this.stopped = false; this.poll(); }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  async poll() {
    clearTimeout(this.timer);
    if (this.stopped) return undefined;
    if (this.inflight) return this.inflight;
    const controller = new AbortController();
    const timeout = setTimeout(() => controller.abort(), TIMEOUT_MS);
    this.inflight = (async () => {
      try {
        this.status = await api.status({ signal: controller.signal });
        this.hubUp = true;
        this.hubError = null;
      } catch (error) {
        this.hubUp = false;
        this.hubError = error.name === "AbortError" ? `no answer within ${TIMEOUT_MS / 1000} s` : error.message;
      } finally {
        clearTimeout(timeout);
        this.inflight = null;
      }
      if (this.stopped) return;
      this.draw();
      this.onChange?.(this);
      this.timer = setTimeout(() => this.poll(), POLL_MS);
    })();
    return this.inflight;
  }

  /** Problems worth a banner: the hub unreachable, a worker down, a capture source failing. */
  problems() {
    if (this.hubUp === false) {
      return [{ level: "error", key: "hub", text: `Cannot reach the hub at ${location.host}: ${this.hubError}. `
        + `Retrying every ${POLL_MS / 1000} s; the feed resumes by itself when it is back.` }];
    }
    const out = [];
    for (const worker of this.status?.workers || []) {
      const name = worker.node || worker.url;
      if (worker.ok === false) {
        out.push({ level: "error", key: `worker:${name}`, text: `Worker ${name} is down: ${worker.error}. `
          + "Its traffic is missing from the feed until it is back." });
        continue;
      }
      if (worker.state === "busy") {   // up, but refusing the hub's live stream for now
        out.push({ level: "warn", key: `busy:${name}`, text: `Worker ${name} is busy: it ${worker.busy}. `
          + "Its new traffic is missing from the live feed until it accepts the stream; the hub keeps asking." });
      }
      const capture = worker.status?.capture;
      for (const source of capture?.sources || []) {
        if (source.error) out.push({ level: "error", key: `source:${name}:${source.name}`, text: `Worker ${name}: capture on ${source.name} failed: ${source.error}` });
      }
      if (capture && capture.running === false && !(capture.sources || []).every((s) => s.finished)) {
        out.push({ level: "warn", key: `capture:${name}`, text: `Worker ${name}: capture is not running.` });
      }
      if (capture?.last_write_error) out.push({ level: "warn", key: `write:${name}`, text: `Worker ${name}: cannot write packets: ${capture.last_write_error}` });
    }
    if (this.status && !(this.status.workers || []).length) {
      out.push({ level: "warn", key: "no-workers", text: "The hub has no workers yet: nothing is captured." });
    }
    return out;
  }

  draw() {
    replace(this.banners, this.problems().map((problem) => h("div", {
      class: `banner ${problem.level}`, role: "alert", "data-key": problem.key,
    }, problem.text)));
    const hub = this.status?.hub;
    if (this.hubUp === false) {
      this.pill.className = "pill st-error";
      this.pill.textContent = "hub down";
    } else if (hub) {
      this.pill.className = `pill ${hub.workers_ok === hub.workers && hub.workers ? "st-ok" : "st-error"}`;
      this.pill.textContent = `workers ${hub.workers_ok}/${hub.workers}`;
    }
  }
}
