// Snapshots (docs/API.md, "Snapshots"): save the filtered traffic of a recent window in the hub,
// where it outlives the workers' rings and the hub's restarts; list, open (in the Traffic view),
// download and delete them.

import { ApiError, apiUrl, getJson } from "./api.js";
import { h, replace } from "./dom.js";
import { bytes, count, dateTime } from "./format.js";

/** POST/DELETE as the hub wants changes: JSON, same origin (the cookie goes along). */
async function change(method, path, body) {
  let response;
  try {
    response = await fetch(apiUrl(path), { method, headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (error) {
    throw new ApiError(`cannot reach the hub (${error.message})`);
  }
  if (!response.ok) {
    let detail = "";
    try { detail = (await response.json()).detail || ""; } catch { detail = response.statusText; }
    throw new ApiError(`${response.status} ${detail}`, response.status);
  }
  return response.status === 204 ? null : response.json();
}

export class Snapshots {
  /** root: the view's list element; message: where outcomes are said; onOpen(name): show
   *  that snapshot's entries in the Traffic view; onDeleted(name): it is gone. */
  constructor(root, message, onOpen, onDeleted) {
    this.root = root;
    this.message = message;
    this.onOpen = onOpen;
    this.onDeleted = onDeleted;
  }

  say(text, problem = false) {
    this.message.textContent = text;
    this.message.classList.toggle("error", problem);
  }

  async load() {
    try {
      this.render(await getJson("snapshots"));
    } catch (error) {
      this.say(`snapshots: ${error.message}`, true);
    }
  }

  /** Save the window's packets (q's streams, or all without q) and entries under `name`. */
  async create(q, since, name) {
    this.say("saving …");
    try {
      const meta = await change("POST", "snapshots", { q: q || null, since, name: name || null });
      const partial = meta.partial && meta.partial.length ? `; partial: no answer from ${meta.partial.join(", ")}` : "";
      this.say(`saved ${meta.name}: ${count(meta.entries)} entries, ${bytes(meta.bytes)}${partial}`);
    } catch (error) {
      this.say(`not saved: ${error.message}`, true);
    }
    await this.load();
  }

  async remove(name) {
    try {
      await change("DELETE", `snapshots/${encodeURIComponent(name)}`);
      this.say(`deleted ${name}`);
      this.onDeleted?.(name);
    } catch (error) {
      this.say(`not deleted: ${error.message}`, true);
    }
    await this.load();
  }

  render(answer) {
    const rows = answer.snapshots || [];
    const summary = h("p", { class: "muted" },
      `${rows.length} snapshots, ${bytes(answer.bytes || 0)} of ${bytes(answer.limit || 0)}`);
    if (!rows.length) {
      replace(this.root, summary);
      return;
    }
    const table = h("table", { class: "snapshots", "aria-label": "Snapshots" },
      h("thead", {}, h("tr", {}, ["Name", "Saved", "Filter", "Entries", "Size", ""].map((t) => h("th", {}, t)))),
      h("tbody", {}, rows.map((row) => {
        const name = encodeURIComponent(row.name);
        return h("tr", { dataset: { name: row.name } },
          h("td", {}, row.name),
          h("td", {}, dateTime(row.created)),
          h("td", { class: "mono" }, row.q || "(all traffic)"),
          h("td", { class: "num" }, count(row.entries)),
          h("td", { class: "num" }, bytes(row.bytes)),
          h("td", {},
            h("button", { type: "button", class: "primary", "aria-label": `Open ${row.name}`,
              title: "Show its entries in the Traffic view", onclick: () => this.onOpen(row.name) }, "Open"), " ",
            h("a", { class: "button", href: apiUrl(`snapshots/${name}/pcap`), download: `${row.name}.pcap`,
              "aria-label": `Download pcap of ${row.name}` }, "pcap"), " ",
            h("a", { class: "button", href: apiUrl(`snapshots/${name}/entries`), download: `${row.name}.json`,
              "aria-label": `Download entries of ${row.name}` }, "entries"), " ",
            h("button", { type: "button", "aria-label": `Delete ${row.name}`, onclick: () => this.remove(row.name) }, "Delete")));
      })));
    replace(this.root, summary, table);
  }
}
