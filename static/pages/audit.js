/* Audit log (§9): every change, newest first — when (in this browser's
   timezone), who, what, on which object, and what changed. Filters for the
   actor, the object (type and/or id) and a time range live in the hash
   query (#/audit?actor=user:1&entity=customer&from=2025-09-01T00:00:00Z),
   so a reload or a shared link keeps them; "Load more" follows next_cursor. */

import * as api from "../api.js";
import { field, h, messageLine, showMessage, table } from "../dom.js";
import { showApiError } from "../field-errors.js";

/** Who may open this page (GET /v1/audit-log answers 403 to others). */
export const ROLES = ["admin", "finance", "customer_success", "sales", "viewer"];

const FILTERS = ["actor", "entity", "entity_id", "from", "to"];
const OBJECT_TYPES = ["alert", "api_key", "coupon", "customer", "event", "meter", "object", "plan", "resource", "session",
  "subscription", "user", "webhook"];
const OBJECT_PAGES = { customer: "#/customers/", webhook: "#/webhooks/", invoice: "#/invoices/" };
const HEADINGS = ["Time", "Actor", "Action", "Object", "Change"];
const IGNORED = new Set(["updated_at"]); // bookkeeping, not a change anyone made
const MAX_CHANGES = 3;
// entries that record an event rather than a created object: what they say when they have no "before"
const EVENTS = {
  "auth.login": "signed in", "auth.login_failed": "failed sign-in", "api_key.revoked_use": "used after revocation",
  "invoice_run.run": "invoice run", "payment.create": "payment recorded",
};
const SHORT = 60;

const pad = (number, size = 2) => String(number).padStart(size, "0");

/** The browser's IANA timezone (what the times are shown in). */
export function browserZone() {
  return Intl.DateTimeFormat().resolvedOptions().timeZone || "local time";
}

/** A Date of an RFC 3339 text (fractions beyond milliseconds dropped), or null. */
function dateOf(text) {
  const date = new Date(String(text || "").replace(/(\.\d{3})\d+/, "$1"));
  return Number.isNaN(date.getTime()) ? null : date;
}

/** "2025-09-16 23:05:12" in the browser's timezone. */
export function localText(date, seconds = true) {
  const day = `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`;
  const clock = `${pad(date.getHours())}:${pad(date.getMinutes())}`;
  return `${day} ${clock}${seconds ? `:${pad(date.getSeconds())}` : ""}`;
}

/** A <datetime-local> value for an instant in the URL ("" when there is none or it is not one). */
function inputValue(text) {
  const date = text ? dateOf(text) : null;
  return date ? localText(date, false).replace(" ", "T") : "";
}

/** The instant (RFC 3339 UTC) of a <datetime-local> value, or "". */
function instantOf(value) {
  if (!value) return "";
  const date = new Date(value); // a date-time without an offset is local time
  return Number.isNaN(date.getTime()) ? "" : date.toISOString().replace(".000Z", "Z");
}

function filtersOf(query) {
  const filters = {};
  for (const name of FILTERS) filters[name] = (query.get(name) || "").trim();
  return filters;
}

export function hashOf(filters) {
  const params = new URLSearchParams();
  for (const name of FILTERS) if (filters[name]) params.set(name, filters[name]);
  const text = params.toString();
  return text ? `#/audit?${text}` : "#/audit";
}

function localTime(text) {
  const date = dateOf(text);
  if (!date) return text || "—";
  return h("time", { datetime: text, title: `${text} (UTC)` }, localText(date));
}

export function render(main, { role, query }) {
  const filters = filtersOf(query);
  const status = messageLine();
  const { table: list, body } = table(HEADINGS, "audit");
  const more = h("button", { type: "button", class: "secondary more", hidden: true }, "Load more");
  const actors = actorBook(role);
  const form = filterForm(filters, actors);
  let cursor = null;
  let generation = 0;

  async function load(reset) {
    const mine = ++generation;
    try {
      const page = await api.get("/v1/audit-log", { ...filters, cursor: reset ? null : cursor });
      if (mine !== generation) return;
      if (reset) body.replaceChildren();
      for (const entry of page.data) body.append(row(entry, filters, actors));
      if (reset && page.data.length === 0) {
        body.append(h("tr", {}, h("td", { colspan: HEADINGS.length, class: "empty" },
          active(filters) ? "No entries match these filters." : "No changes recorded yet.")));
      }
      cursor = page.next_cursor;
      more.hidden = !cursor;
      showMessage(status, "");
    } catch (error) {
      if (mine === generation) showApiError(status, "Could not load the audit log", error);
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const target = hashOf(chosen(form));
    if (location.hash === target) load(true); // same filters: the hash does not change, so reload here
    else location.hash = target; // the router renders the page again with the new query
  });
  more.addEventListener("click", () => load(false));
  main.append(
    h("div", { class: "page-head" }, h("h1", {}, "Audit log")),
    h("section", { class: "card" }, form),
    h("section", { class: "card" },
      h("div", { class: "section-head list-tools" },
        h("p", { class: "muted", id: "audit-scope" }, active(filters) ? "Filtered entries, newest first."
          : "Every change, newest first."),
        h("p", { class: "muted", id: "audit-zone" }, `Times in ${browserZone()}.`)),
      status, list, more));
  actors.load().then(() => actors.relabel(main));
  load(true);
}

function active(filters) {
  return FILTERS.some((name) => filters[name]);
}

/** The filters the form holds, with the time range as UTC instants. */
function chosen(form) {
  const value = (name) => String(form.elements[name].value || "").trim();
  return { actor: value("actor"), entity: value("entity"), entity_id: value("entity_id"),
    from: instantOf(value("from")), to: instantOf(value("to")) };
}

function filterForm(filters, actors) {
  const types = OBJECT_TYPES.includes(filters.entity) || !filters.entity ? OBJECT_TYPES : [...OBJECT_TYPES, filters.entity];
  const entity = h("select", { name: "entity" }, h("option", { value: "" }, "Any type"),
    types.map((type) => h("option", { value: type, selected: type === filters.entity }, type.replace(/_/g, " "))));
  const actor = h("input", { name: "actor", value: filters.actor || null, list: "audit-actors", placeholder: "user:1 or key:2",
    autocomplete: "off", spellcheck: "false" });
  return h("form", { class: "form-inline", id: "audit-filter" },
    field("Actor", actor), h("datalist", { id: "audit-actors" }, actors.options()),
    field("Object type", entity),
    field("Object id", h("input", { name: "entity_id", value: filters.entity_id || null, placeholder: "any", size: 8,
      maxlength: 200 })),
    field("From", h("input", { type: "datetime-local", name: "from", value: inputValue(filters.from) || null })),
    field("To (before)", h("input", { type: "datetime-local", name: "to", value: inputValue(filters.to) || null })),
    h("button", { type: "submit" }, "Apply"),
    active(filters) ? h("a", { href: "#/audit", class: "clear-filters" }, "Clear filters") : null);
}

/** Readable names of the actors ("user:3" → its e-mail, "key:2" → the key's name),
    from the lists this role may read; a label stays as it is otherwise. */
function actorBook(role) {
  const names = new Map([["system", "the scheduler"]]);
  async function fill(path, labelOf, nameOf) {
    try {
      const page = await api.get(path, { limit: 1000 });
      for (const item of page.data) names.set(labelOf(item), nameOf(item));
    } catch {
      // names are a convenience: the labels are shown instead
    }
  }
  return {
    name: (label) => names.get(label) || null,
    options: () => [...names].map(([label, name]) => h("option", { value: label }, name)),
    async load() {
      const jobs = [];
      if (["admin", "finance"].includes(role)) jobs.push(fill("/v1/users", (u) => `user:${u.id}`, (u) => u.email));
      if (role === "admin") jobs.push(fill("/v1/api-keys", (k) => `key:${k.id}`, (k) => k.name));
      await Promise.all(jobs);
    },
    relabel(root) {
      root.querySelector("#audit-actors")?.replaceChildren(...this.options());
      for (const cell of root.querySelectorAll("td.actor[data-actor]")) {
        const name = names.get(cell.dataset.actor);
        const holder = cell.querySelector(".actor-name");
        if (name && holder) holder.textContent = name;
      }
    },
  };
}

/** A short text of a JSON value for the change summary. */
function shortValue(value) {
  if (value === null || value === undefined || value === "") return "—";
  const text = typeof value === "object" ? JSON.stringify(value) : String(value);
  return text.length > SHORT ? `${text.slice(0, SHORT - 1)}…` : text;
}

/** What a create or delete was about: a user's e-mail, else its name, key, code or URL. */
function title(object, entity) {
  if (!object || typeof object !== "object") return "";
  const keys = entity === "user" ? ["email", "name"] : ["name", "key", "code", "url", "email"];
  for (const key of keys) {
    if (typeof object[key] === "string" && object[key]) return ` “${shortValue(object[key])}”`;
  }
  return "";
}

/** The fields an entry changed, as "field: before → after" texts. */
export function changes(before, after) {
  const keys = [...new Set([...Object.keys(before || {}), ...Object.keys(after || {})])]
    .filter((key) => !IGNORED.has(key));
  return keys.filter((key) => JSON.stringify((before || {})[key]) !== JSON.stringify((after || {})[key]))
    .map((key) => `${key}: ${shortValue((before || {})[key])} → ${shortValue((after || {})[key])}`);
}

/** A one-line summary of an entry's change. */
export function summary(entry) {
  const { before, after } = entry;
  const isObject = (value) => value && typeof value === "object" && !Array.isArray(value);
  if (!before && !after) return "—";
  if (!before && EVENTS[entry.action]) return `${EVENTS[entry.action]}${title(after, entry.entity)}`;
  if (!before) return `created${title(after, entry.entity)}`;
  if (!after) return `deleted${title(before, entry.entity)}`;
  if (!isObject(before) || !isObject(after)) return `${shortValue(before)} → ${shortValue(after)}`;
  const found = changes(before, after);
  if (!found.length) return "no field changed";
  const shown = found.slice(0, MAX_CHANGES).join("; ");
  return found.length > MAX_CHANGES ? `${shown}; and ${found.length - MAX_CHANGES} more` : shown;
}

function details(entry) {
  if (!entry.before && !entry.after) return null;
  const block = (label, value) => (value === null || value === undefined ? null
    : h("div", { class: `side ${label.toLowerCase()}` }, h("strong", {}, label), h("pre", {}, JSON.stringify(value, null, 2))));
  return h("details", { class: "audit-details" }, h("summary", {}, "Before and after"),
    h("div", { class: "before-after" }, block("Before", entry.before), block("After", entry.after)),
    entry.request_id ? h("small", { class: "muted request-id" }, `Request ${entry.request_id}`) : null);
}

function filterLink(filters, change, text) {
  return h("a", { href: hashOf({ ...filters, ...change }), class: "filter-link", title: "Show only these" }, text);
}

function row(entry, filters, actors) {
  const objectId = entry.entity_id === null || entry.entity_id === undefined ? null : String(entry.entity_id);
  const page = OBJECT_PAGES[entry.entity];
  const object = [filterLink(filters, { entity: entry.entity, entity_id: objectId || "" },
    `${entry.entity.replace(/_/g, " ")}${objectId ? ` #${objectId}` : ""}`)];
  if (page && objectId && /^\d+$/.test(objectId)) object.push(" ", h("a", { href: `${page}${objectId}`, class: "open-object" }, "open"));
  return h("tr", { "data-id": entry.id, "data-action": entry.action, "data-entity": entry.entity,
    "data-entity-id": objectId ?? "" },
  h("td", { class: "time at" }, localTime(entry.at)),
  h("td", { class: "actor", "data-actor": entry.actor },
    filterLink(filters, { actor: entry.actor }, h("span", { class: "actor-name" }, actors.name(entry.actor) || entry.actor)),
    h("small", { class: "muted actor-label" }, entry.role ? `${entry.actor} · ${entry.role.replace(/_/g, " ")}` : entry.actor)),
  h("td", { class: "action" }, h("code", {}, entry.action)),
  h("td", { class: "object" }, object),
  h("td", { class: "change" }, h("span", { class: "summary" }, summary(entry)), details(entry)));
}
