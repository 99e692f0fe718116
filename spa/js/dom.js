// Small DOM helpers: build elements without innerHTML, so captured text is never markup.

/**
 * h("div", {class: "row", onclick: fn, "aria-label": "x"}, child, "text", [more])
 * Attributes starting with "on" become listeners; `dataset` and `style` objects are merged;
 * null/undefined/false attributes and children are skipped.
 */
export function h(tag, attrs, ...children) {
  const el = tag.includes(":") ? document.createElementNS("http://www.w3.org/2000/svg", tag.split(":")[1])
                               : document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2), value);
    } else if (name === "dataset") {
      Object.assign(el.dataset, value);
    } else if (name === "style" && typeof value === "object") {
      Object.assign(el.style, value);
    } else if (name === "text") {
      el.textContent = value;
    } else {
      el.setAttribute(name, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

/** An SVG element: svg("circle", {r: 4}). */
export function svg(tag, attrs, ...children) {
  return h(`svg:${tag}`, attrs, ...children);
}

export function append(parent, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    parent.append(child instanceof Node ? child : String(child));
  }
  return parent;
}

/** Replace all children of `el`. */
export function replace(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

export const $ = (selector, root = document) => root.querySelector(selector);
