/* Server validation errors (§2: the details name each bad field, e.g.
   "charges[0].tiers[1].up_to") shown twice: as a readable list, and on the
   form control whose data-field holds that path (or its closest parent:
   the tier row, the charge, ...). Text only, through text nodes. */

import { h, showMessage } from "./dom.js";

const NAMES = {
  up_to: "up to", unit_price: "unit price", flat_fee: "flat fee", free_units: "free units", free_units_per_day: "free units per day",
  minimum_charge: "minimum charge", package_size: "package size", package_price: "package price",
  base_fee: "base fee", minimum_commitment: "minimum commitment", trial_days: "trial days",
  customer_id: "customer", billing_anchor: "billing anchor", as_of: "as of",
};
const SINGULAR = { charges: "charge", tiers: "tier" };

/** "charges[0].tiers[1].up_to" → "Charge 1 › tier 2 › up to". */
export function fieldLabel(path) {
  if (!path) return "Request";
  const parts = String(path).match(/\[\d+\]|[^.[\]]+/g) || [String(path)];
  const words = [];
  for (let i = 0; i < parts.length; i += 1) {
    const next = parts[i + 1];
    if (next && /^\[\d+\]$/.test(next)) {
      words.push(`${SINGULAR[parts[i]] || parts[i]} ${Number(next.slice(1, -1)) + 1}`);
      i += 1;
    } else {
      words.push(NAMES[parts[i]] || parts[i]);
    }
  }
  const text = words.join(" › ");
  return text.charAt(0).toUpperCase() + text.slice(1);
}

/** The path and its parents, most specific first: a.b[1].c, a.b[1], a.b, a. */
function candidates(path) {
  const found = [];
  let current = String(path || "");
  while (current) {
    found.push(current);
    const cut = Math.max(current.lastIndexOf("."), current.lastIndexOf("["));
    current = cut > 0 ? current.slice(0, cut) : "";
  }
  return found;
}

function target(root, path) {
  for (const candidate of candidates(path)) {
    const element = [...root.querySelectorAll("[data-field]")].find((node) => node.dataset.field === candidate);
    if (element) return element;
  }
  return null;
}

// An error can come from several sources at once (the live estimate and the
// last submit): marks and notes keep the set of sources that still claim them.
function sources(node) {
  return new Set((node.dataset.errorSources || "").split(" ").filter(Boolean));
}

function release(node, source) {
  const left = sources(node);
  if (source) left.delete(source);
  else left.clear();
  node.dataset.errorSources = [...left].join(" ");
  return left.size === 0;
}

function claim(node, source) {
  node.dataset.errorSources = [...sources(node).add(source)].join(" ");
}

/** Remove the marks that `source` ("submit", "estimate", ...) left in `root` (all marks without a source). */
export function clearErrors(root, source) {
  for (const note of root.querySelectorAll(".field-error")) {
    if (release(note, source)) note.remove();
  }
  for (const element of root.querySelectorAll(".invalid")) {
    if (release(element, source)) unmark(element);
  }
}

function unmark(element) {
  element.classList.remove("invalid");
  element.removeAttribute("aria-invalid");
  delete element.dataset.errorSources;
}

/** Mark the controls named by `details`; returns the details no control holds. */
export function markErrors(root, details, source) {
  clearErrors(root, source);
  const unplaced = [];
  for (const detail of details || []) {
    const element = detail.field ? target(root, detail.field) : null;
    if (!element) {
      unplaced.push(detail);
      continue;
    }
    element.classList.add("invalid");
    element.setAttribute("aria-invalid", "true");
    claim(element, source);
    const holder = element.closest(".cell, .field") || element;
    const same = [...holder.querySelectorAll(".field-error")]
      .find((note) => note.dataset.for === detail.field && note.textContent === detail.message);
    if (same) {
      claim(same, source);
      continue;
    }
    const note = h("small", { class: "field-error", "data-for": detail.field }, detail.message);
    claim(note, source);
    const legend = holder.querySelector(":scope > legend");
    if (legend) legend.after(note);
    else if (holder === element && !element.children.length) element.after(note);
    else holder.append(note);
  }
  return unplaced;
}

/** Whether a mark of `source` is left in `root`. */
export function hasErrors(root, source) {
  return [...root.querySelectorAll(".invalid")].some((element) => sources(element).has(source));
}

/** Forget the error of one control once the user edits it. */
export function clearControl(control) {
  if (!control.classList || !control.classList.contains("invalid")) return;
  unmark(control);
  const holder = control.closest(".cell, .field") || control.parentElement;
  for (const note of holder.querySelectorAll(".field-error")) {
    if (note.dataset.for && note.dataset.for.startsWith(control.dataset.field)) note.remove();
  }
}

/** A readable list of the details: "Charge 1 › tier 2 › up to: message charges[0].tiers[1].up_to". */
export function errorList(details) {
  return h("ul", { class: "error-list" }, details.map((detail) => h("li", {},
    h("strong", {}, fieldLabel(detail.field)), `: ${detail.message}`,
    detail.field ? [" ", h("code", { class: "field-path" }, detail.field)] : null)));
}

/** An ApiError in a message line: the prefix and the server's message, or
    the list of bad fields when it names them. */
export function showApiError(line, prefix, error) {
  const details = (error.details || []).filter((detail) => detail && detail.message);
  if (!details.length) {
    showMessage(line, `${prefix}: ${error.message}`, "error");
    return;
  }
  showMessage(line, `${prefix}:`, "error");
  line.append(errorList(details));
}
