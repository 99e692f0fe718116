// The KFL box: validated as you type by the hub (/api/v1/query/validate), the error's column
// marked under the text, Enter applies a valid query; history (this browser) and examples.

import { api } from "./api.js";
import { h, replace } from "./dom.js";

const VALIDATE_DELAY_MS = 150;
const HISTORY_KEY = "shark.kfl.history";
const HISTORY_SIZE = 30;

export const EXAMPLES = [
  ["http", "HTTP/1 traffic"],
  ["http and response.status >= 500", "failing HTTP requests"],
  ["status >= 400 and status < 500", "client errors"],
  ['request.path.startsWith("/api")', "paths under /api"],
  ['request.headers["content-type"].contains("json")', "JSON requests"],
  ["elapsed_ms > 100", "slower than 100 ms"],
  ["dns and status != 0", "DNS errors"],
  ['redis and request.command == "GET"', "Redis GETs"],
  ["grpc and status != 0", "failing gRPC calls"],
  ['dst.namespace != "kube-system"', "outside kube-system"],
  ["response.error != null", "any protocol error"],
  ["not complete", "exchanges cut short"],
  ['tags.contains("test.fail")', "failed script tests"],
];

/** Appends `clause` to `query` with "and", in parentheses when the query has a top-level or. */
export function addClause(query, clause) {
  const current = (query || "").trim();
  if (!current) return clause;
  const wrapped = /\bor\b|\|\|/.test(current) ? `(${current})` : current;
  return `${wrapped} and ${clause}`;
}

export class FilterBox {
  constructor({ input, mirror, message, list, form, historyButton, examplesButton, onApply }) {
    Object.assign(this, { input, mirror, message, list, form, onApply });
    this.applied = "";
    this.validation = { q: "", valid: true, error: null, column: null };
    this.sequence = 0;
    this.timer = null;
    this.listKind = null;   // "history" | "examples" while the list is open
    this.active = -1;
    input.addEventListener("input", () => { this.closeList(); this.changed(); });
    input.addEventListener("scroll", () => { mirror.scrollLeft = input.scrollLeft; });
    input.addEventListener("keydown", (event) => this.onKey(event));
    // The list closes when focus leaves the filter form (its buttons and options are in it)
    // or on a click anywhere else.
    form.addEventListener("focusout", (event) => {
      if (!form.contains(event.relatedTarget)) this.closeList();
    });
    document.addEventListener("pointerdown", (event) => {
      if (this.listKind && !form.contains(event.target)) this.closeList();
    });
    form.addEventListener("submit", (event) => { event.preventDefault(); this.submit(); });
    historyButton.addEventListener("click", () => this.toggleList("history"));
    examplesButton.addEventListener("click", () => this.toggleList("examples"));
  }

  get value() { return this.input.value; }

  /** Show `q` as the applied query (from the URL or after applying). */
  set(q) {
    this.input.value = q;
    this.applied = q;
    this.changed(true);
  }

  focus() {
    this.input.focus();
    this.input.select();
  }

  changed(immediate = false) {
    clearTimeout(this.timer);
    this.drawMirror(null);
    if (!this.input.value.trim()) {
      this.show({ q: this.input.value, valid: true, error: null, column: null });
      return Promise.resolve(this.validation);
    }
    this.setPending();
    return new Promise((resolve) => {
      this.timer = setTimeout(() => this.validate().then(resolve), immediate ? 0 : VALIDATE_DELAY_MS);
    });
  }

  async validate() {
    const q = this.input.value;
    const sequence = ++this.sequence;
    let result;
    try {
      const answer = await api.validate(q);
      result = { q, valid: answer.valid, error: answer.error, column: answer.column };
    } catch (error) {
      result = { q, valid: null, error: `cannot validate: ${error.message}`, column: null };
    }
    if (sequence === this.sequence) this.show(result);
    return result;
  }

  setPending() {
    this.input.removeAttribute("aria-invalid");
    this.form.dataset.state = "checking";
  }

  show(result) {
    this.validation = result;
    const { valid, error, column } = result;
    this.form.dataset.state = valid === true ? (result.q.trim() === this.applied.trim() ? "applied" : "valid")
                            : valid === false ? "invalid" : "unknown";
    if (valid === false) {
      this.input.setAttribute("aria-invalid", "true");
      this.message.className = "kfl-message error";
      this.message.textContent = error;
      this.drawMirror(column);
    } else {
      this.input.removeAttribute("aria-invalid");
      this.message.className = valid === null ? "kfl-message warn" : "kfl-message";
      this.message.textContent = valid === null ? error
        : result.q.trim() && result.q.trim() !== this.applied.trim() ? "valid — press Enter to apply" : "";
      this.drawMirror(null);
    }
  }

  /** The text again, under the input, with the character at `column` (1-based) marked. */
  drawMirror(column) {
    const text = this.input.value;
    if (!column) {
      replace(this.mirror);
      return;
    }
    const at = Math.max(0, Math.min(column - 1, text.length));
    const mark = h("mark", { class: "kfl-error-at", "data-column": column },
      at < text.length ? text[at] : " ");
    replace(this.mirror, text.slice(0, at), mark, at < text.length ? text.slice(at + 1) : "");
    this.mirror.scrollLeft = this.input.scrollLeft;
  }

  async submit() {
    this.closeList();
    const q = this.input.value;
    let result = this.validation;
    if (result.q !== q || result.valid === null || this.form.dataset.state === "checking") {
      clearTimeout(this.timer);
      result = q.trim() ? await this.validate() : { q, valid: true };
    }
    if (result.valid === false) {
      this.input.focus();
      return false;
    }
    this.apply(q);
    return true;
  }

  apply(q) {
    this.input.value = q;
    this.applied = q;
    if (q.trim()) remember(q.trim());
    this.show({ q, valid: true, error: null, column: null });
    this.onApply(q.trim());
  }

  // -- history and examples (a listbox under the input) --------------------------------------
  toggleList(kind) {
    if (this.listKind === kind) this.closeList();
    else this.openList(kind);
  }

  openList(kind) {
    const items = kind === "history"
      ? history().map((q) => [q, ""])
      : EXAMPLES;
    this.listKind = kind;
    this.active = -1;
    this.list.setAttribute("aria-label", kind === "history" ? "Filter history" : "Filter examples");
    const options = items.length ? items.map(([q, note], index) => h("li", {
      role: "option", id: `kfl-option-${index}`, "aria-selected": "false", "data-q": q,
      onmousedown: (event) => { event.preventDefault(); this.pick(q); },
    }, h("code", {}, q), note ? h("span", { class: "note" }, note) : null))
      : [h("li", { class: "note", role: "option", "aria-disabled": "true" }, "no filters applied yet")];
    replace(this.list, options);
    this.list.hidden = false;
    this.input.setAttribute("aria-expanded", "true");
  }

  closeList() {
    this.listKind = null;
    this.list.hidden = true;
    this.input.setAttribute("aria-expanded", "false");
    this.input.removeAttribute("aria-activedescendant");
  }

  pick(q) {
    this.closeList();
    this.input.value = q;
    this.changed(true).then((result) => { if (result.valid !== false) this.apply(q); });
  }

  onKey(event) {
    const options = [...this.list.querySelectorAll("[role=option][data-q]")];
    if (event.key === "ArrowDown" && this.list.hidden) {
      this.openList("history");
      event.preventDefault();
    } else if (!this.list.hidden && (event.key === "ArrowDown" || event.key === "ArrowUp") && options.length) {
      this.active = (this.active + (event.key === "ArrowDown" ? 1 : -1) + options.length) % options.length;
      options.forEach((option, index) => option.setAttribute("aria-selected", String(index === this.active)));
      this.input.setAttribute("aria-activedescendant", options[this.active].id);
      options[this.active].scrollIntoView({ block: "nearest" });
      event.preventDefault();
    } else if (event.key === "Enter" && !this.list.hidden && this.active >= 0) {
      event.preventDefault();
      this.pick(options[this.active].dataset.q);
    } else if (event.key === "Escape") {
      if (!this.list.hidden) this.closeList();
      else this.input.blur();
      event.preventDefault();
    }
  }
}

export function history() {
  try {
    const stored = JSON.parse(localStorage.getItem(HISTORY_KEY) || "[]");
    return Array.isArray(stored) ? stored.filter((q) => typeof q === "string") : [];
  } catch {
    return [];
  }
}

function remember(q) {
  const items = [q, ...history().filter((item) => item !== q)].slice(0, HISTORY_SIZE);
  try { localStorage.setItem(HISTORY_KEY, JSON.stringify(items)); } catch { /* storage full or off */ }
}
