// Message bodies in the detail view: JSON and XML pretty-printed, text as is, binary as a hex
// dump (offset, bytes, ASCII), each switchable to the raw text or the hex of the same bytes.

import { h, replace } from "./dom.js";
import { bytes } from "./format.js";

const HEX_LIMIT = 64 * 1024;   // a hex dump beyond this is not read by anyone and costs seconds

/** The bytes of a body: {data, encoding: "text"|"base64"}. */
export function bodyBytes(body) {
  if (body.encoding === "base64") {
    const binary = atob(body.data || "");
    const out = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i += 1) out[i] = binary.charCodeAt(i);
    return out;
  }
  return new TextEncoder().encode(body.data || "");
}

/** "json", "xml", "text" or "binary": from the content type first, then from the content. */
export function bodyKind(body, contentType = "") {
  if (body.encoding === "base64") return "binary";
  const type = contentType.toLowerCase();
  const text = (body.data || "").trimStart();
  if (type.includes("json") || /^[[{]/.test(text)) {
    if (parseJson(body.data) !== undefined) return "json";
  }
  if (type.includes("xml") || text.startsWith("<?xml") || (/^<[A-Za-z]/.test(text) && !type.includes("html"))) {
    if (parseXml(body.data)) return "xml";
  }
  return "text";
}

function parseJson(text) {
  try { return JSON.parse(text); } catch { return undefined; }
}

function parseXml(text) {
  const doc = new DOMParser().parseFromString(text, "application/xml");
  return doc.getElementsByTagName("parsererror").length ? null : doc;
}

/** A body view: a toolbar (Pretty | Raw | Hex, notes) and the content. */
export function renderBody(body, contentType, label) {
  if (!body || typeof body !== "object" || typeof body.data !== "string") return null;
  const kind = bodyKind(body, contentType);
  const modes = kind === "binary" ? ["hex", "text"] : ["pretty", "raw", "hex"];
  const content = h("div", { class: "body-content" });
  const buttons = modes.map((mode) => h("button", {
    type: "button", class: "mode", "aria-pressed": "false", "data-mode": mode,
    onclick: () => show(mode),
  }, { pretty: kind === "text" ? "Text" : "Pretty", raw: "Raw", hex: "Hex", text: "As text" }[mode]));
  const notes = [];
  const size = typeof body.size === "number" ? body.size : bodyBytes(body).length;
  notes.push(`${bytes(size)} ${kind === "binary" ? "binary" : kind}`);
  if (body.content_encoding) notes.push(`decoded from ${body.content_encoding}`);
  if (body.truncated) notes.push("truncated: the body is longer than the stored limit");
  function show(mode) {
    for (const button of buttons) button.setAttribute("aria-pressed", String(button.dataset.mode === mode));
    if (mode === "pretty") replace(content, pretty(body.data, kind));
    else if (mode === "raw") replace(content, h("pre", { class: "body raw" }, body.data));
    else if (mode === "text") replace(content, h("pre", { class: "body raw" }, new TextDecoder("utf-8", { fatal: false }).decode(bodyBytes(body))));
    else replace(content, hexDump(bodyBytes(body)));
  }
  show(modes[0]);
  const empty = !body.data;
  return h("section", { class: "body-view", "aria-label": `${label} body`, "data-kind": kind },
    h("div", { class: "body-bar" },
      h("span", { class: "body-notes" }, notes.join(" · ")),
      empty ? null : h("span", { class: "modes", role: "group", "aria-label": "Body view" }, buttons)),
    empty ? h("p", { class: "muted" }, "(empty body)") : content);
}

function pretty(text, kind) {
  if (kind === "json") return h("pre", { class: "body json" }, jsonNodes(JSON.parse(text), 0));
  if (kind === "xml") return h("pre", { class: "body xml" }, xmlNodes(parseXml(text).documentElement, 0));
  return h("pre", { class: "body text" }, text);
}

// -- JSON: indented, with spans per token type for colour --------------------------------------
function jsonNodes(value, depth) {
  const indent = "  ".repeat(depth);
  const inner = "  ".repeat(depth + 1);
  if (Array.isArray(value)) {
    if (!value.length) return [h("span", { class: "j-punct" }, "[]")];
    const out = [h("span", { class: "j-punct" }, "[")];
    value.forEach((item, index) => {
      out.push(`\n${inner}`, ...jsonNodes(item, depth + 1));
      if (index < value.length - 1) out.push(h("span", { class: "j-punct" }, ","));
    });
    out.push(`\n${indent}`, h("span", { class: "j-punct" }, "]"));
    return out;
  }
  if (value && typeof value === "object") {
    const keys = Object.keys(value);
    if (!keys.length) return [h("span", { class: "j-punct" }, "{}")];
    const out = [h("span", { class: "j-punct" }, "{")];
    keys.forEach((key, index) => {
      out.push(`\n${inner}`, h("span", { class: "j-key" }, JSON.stringify(key)), h("span", { class: "j-punct" }, ": "),
        ...jsonNodes(value[key], depth + 1));
      if (index < keys.length - 1) out.push(h("span", { class: "j-punct" }, ","));
    });
    out.push(`\n${indent}`, h("span", { class: "j-punct" }, "}"));
    return out;
  }
  const type = value === null ? "null" : typeof value;
  return [h("span", { class: `j-${type}` }, JSON.stringify(value))];
}

// -- XML: one element per line, attributes and text kept --------------------------------------
function xmlNodes(element, depth) {
  const indent = "  ".repeat(depth);
  const attrs = [...element.attributes].flatMap((attr) => [
    " ", h("span", { class: "x-attr" }, attr.name), "=", h("span", { class: "x-value" }, JSON.stringify(attr.value))]);
  const children = [...element.childNodes].filter((node) =>
    node.nodeType === Node.ELEMENT_NODE || (node.nodeType !== Node.ELEMENT_NODE && node.textContent.trim()));
  const open = [indent, h("span", { class: "x-tag" }, `<${element.tagName}`), ...attrs];
  if (!children.length) return [...open, h("span", { class: "x-tag" }, "/>")];
  if (children.length === 1 && children[0].nodeType !== Node.ELEMENT_NODE) {
    return [...open, h("span", { class: "x-tag" }, ">"), textOf(children[0]),
      h("span", { class: "x-tag" }, `</${element.tagName}>`)];
  }
  const out = [...open, h("span", { class: "x-tag" }, ">")];
  for (const child of children) {
    out.push("\n");
    if (child.nodeType === Node.ELEMENT_NODE) out.push(...xmlNodes(child, depth + 1));
    else out.push("  ".repeat(depth + 1), textOf(child));
  }
  out.push("\n", indent, h("span", { class: "x-tag" }, `</${element.tagName}>`));
  return out;
}

function textOf(node) {
  if (node.nodeType === Node.COMMENT_NODE) return h("span", { class: "x-comment" }, `<!--${node.textContent}-->`);
  if (node.nodeType === Node.CDATA_SECTION_NODE) return `<![CDATA[${node.textContent}]]>`;
  return node.textContent.trim();
}

// -- hex dump ----------------------------------------------------------------------------------
export function hexDump(data) {
  const shown = data.subarray(0, HEX_LIMIT);
  const lines = [];
  for (let offset = 0; offset < shown.length; offset += 16) {
    const chunk = shown.subarray(offset, offset + 16);
    let hex = "";
    let ascii = "";
    for (let i = 0; i < 16; i += 1) {
      if (i < chunk.length) {
        hex += chunk[i].toString(16).padStart(2, "0") + (i === 7 ? "  " : " ");
        ascii += chunk[i] >= 0x20 && chunk[i] < 0x7f ? String.fromCharCode(chunk[i]) : ".";
      } else {
        hex += i === 7 ? "    " : "   ";
      }
    }
    lines.push(`${offset.toString(16).padStart(8, "0")}  ${hex} |${ascii}|`);
  }
  const pre = h("pre", { class: "body hex" }, lines.join("\n"));
  if (data.length <= HEX_LIMIT) return pre;
  return [pre, h("p", { class: "muted" }, `showing the first ${bytes(HEX_LIMIT)} of ${bytes(data.length)}`)];
}
