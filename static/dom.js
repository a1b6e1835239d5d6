/* Small DOM helpers. Every string goes into the page as a text node, never
   as HTML, so names like "<img onerror=...>" stay literal text. */

/** An element with attributes and children; `onclick: fn` style attributes
    become event listeners, null/undefined/false ones are left out. */
export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      node.addEventListener(name.slice(2), value);
    } else {
      node.setAttribute(name, value === true ? "" : String(value));
    }
  }
  return append(node, children);
}

/** Append children (nodes, strings, numbers, nested arrays) as nodes or text. */
export function append(node, children) {
  for (const child of [children].flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** A status line for the result of an action: kind is "ok", "error" or "info". */
export function messageLine() {
  return h("p", { class: "message", role: "status", "aria-live": "polite", hidden: true });
}

export function showMessage(line, text, kind = "info") {
  line.textContent = text || "";
  line.className = `message ${kind}`;
  line.hidden = !text;
}

/** A labelled form control. */
export function field(label, control, hint) {
  return h("label", { class: "field" }, h("span", { class: "field-label" }, label), control,
    hint ? h("small", { class: "hint" }, hint) : null);
}

/** The form's fields as an object of trimmed strings. */
export function formValues(form) {
  const values = {};
  for (const [name, value] of new FormData(form)) values[name] = String(value).trim();
  return values;
}

/** Run `action` with the form's submit button disabled. */
export async function whileBusy(form, action) {
  const buttons = form.querySelectorAll("button");
  buttons.forEach((button) => { button.disabled = true; });
  try {
    return await action();
  } finally {
    buttons.forEach((button) => { button.disabled = false; });
  }
}

/** A table with a header row; returns { table, body }. A heading is a title
    or [title, class] (e.g. "wide-only" to hide the column on phones). */
export function table(headings, className = "") {
  const body = h("tbody");
  const cells = headings.map((heading) => {
    const [title, cellClass] = Array.isArray(heading) ? heading : [heading, null];
    return h("th", { scope: "col", class: cellClass }, title);
  });
  const head = h("thead", {}, h("tr", {}, cells));
  const element = h("table", { class: `data ${className}`.trim() }, head, body);
  return { table: h("div", { class: "table-scroll" }, element), body };
}

/** Display text for an API value (numbers, strings, null, objects). */
export function display(value) {
  if (value === null || value === undefined || value === "") return "—";
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

/** An RFC 3339 UTC time as a <time> element with a readable label. */
export function timeElement(text) {
  if (!text) return "—";
  // Seconds are precise enough to read; the exact instant stays in `datetime`.
  const label = String(text).replace("T", " ").replace(/\.\d+/, "").replace(/Z$/, " UTC");
  return h("time", { datetime: text }, label);
}
