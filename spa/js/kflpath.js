// KFL text for "filter by this field": a path to a field of the entry and a literal for its
// value, written the way docs/KFL.md reads them (a.b for plain names, a["any key"], a[0]).

const PLAIN = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** ["request", "headers", "content-type"] -> request.headers["content-type"] */
export function kflPath(keys) {
  let out = "";
  keys.forEach((key, index) => {
    if (typeof key === "number") out += `[${key}]`;
    else if (index === 0) out += key;
    else if (PLAIN.test(key)) out += `.${key}`;
    else out += `[${JSON.stringify(key)}]`;
  });
  return out;
}

/** A KFL literal for a JSON scalar; null for objects and lists (not comparable with ==). */
export function kflLiteral(value) {
  if (value === null) return "null";
  if (typeof value === "string") return JSON.stringify(value);   // KFL takes JSON's escapes
  if (typeof value === "number" && Number.isFinite(value)) return String(value);
  if (typeof value === "boolean") return String(value);
  return null;
}

/** `path == literal`, or null when the value cannot be compared. */
export function equalsClause(keys, value) {
  const literal = kflLiteral(value);
  return literal === null ? null : `${kflPath(keys)} == ${literal}`;
}
