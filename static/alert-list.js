/* What fired (§10 alert firings), as people read it: a table (the Alerts
   page, a customer's page, the portal) or a short list (the Overview), with
   times in the browser's timezone, customers by name, each firing's step or
   rule, and its threshold → value in the currency or the meter's unit.
   Everything goes in as text (dom.js h()); money stays the server's strings. */

import * as api from "./api.js";
import { h, messageLine, showMessage, table } from "./dom.js";
import { showApiError } from "./field-errors.js";
import { byteSize } from "./format.js";
import * as live from "./live.js";

export const TYPE_LABELS = {
  budget: "Budget", spend: "Spend", usage: "Usage", usage_spike: "Usage spike", storage_quota: "Storage quota",
};

/**
 * `load` (an async function) for live updates that may come in bursts (one
 * evaluation can fire for many customers at once): a call while it runs
 * asks for one more run after it, so a burst costs two loads, not one each.
 */
export function coalesce(load) {
  let running = null;
  let again = false;
  const run = () => {
    if (running) {
      again = true;
      return running;
    }
    running = Promise.resolve().then(load).finally(() => {
      running = null;
      if (again) {
        again = false;
        run();
      }
    });
    return running;
  };
  return run;
}

/** The browser's IANA timezone ("Europe/Berlin"), UTC when it has none. */
export function browserZone() {
  try {
    return Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
  } catch {
    return "UTC";
  }
}

const LOCAL = new Intl.DateTimeFormat("en-CA", {
  year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", hourCycle: "h23",
});

/** An RFC 3339 instant as "2025-09-10 14:03" in the browser's timezone; the instant itself in the title. */
export function localTime(text) {
  const date = new Date(text || "");
  if (!text || Number.isNaN(date.getTime())) return text ? String(text) : "—";
  const parts = Object.fromEntries(LOCAL.formatToParts(date).map((part) => [part.type, part.value]));
  return h("time", { datetime: text, title: `${text} (UTC)` },
    `${parts.year}-${parts.month}-${parts.day} ${parts.hour}:${parts.minute}`);
}

/** A type as a small badge ("usage_spike" reads "Usage spike"). */
export function typeBadge(type) {
  const known = /^[a-z_]+$/.test(String(type)) ? type : "unknown";
  return h("span", { class: `badge alert-type alert-type-${known}`, "data-type": type },
    TYPE_LABELS[type] || String(type).replace(/_/g, " "));
}

/**
 * Customer names by id, each asked once (GET /v1/customers/{id}); `link(id)`
 * is a link to the customer's page that shows "Customer #7" until the name arrives.
 */
export function customerNames() {
  const names = new Map();
  const nameOf = (id) => {
    if (!names.has(id)) names.set(id, api.get(`/v1/customers/${id}`).then((customer) => customer.name, () => null));
    return names.get(id);
  };
  const known = (id, name) => { if (!names.has(id)) names.set(id, Promise.resolve(name)); };
  const link = (id) => {
    const anchor = h("a", { href: `#/customers/${id}`, class: "customer-link", "data-customer-id": id }, `Customer #${id}`);
    nameOf(id).then((name) => { if (name !== null) anchor.textContent = name; });
    return anchor;
  };
  return { nameOf, known, link };
}

/** Meter units by key ("call", "GB"), or an empty map when the meters cannot be read. */
export function meterUnits() {
  return api.get("/v1/meters", { limit: 1000 })
    .then((meters) => new Map(meters.data.map((meter) => [meter.key, meter.unit])), () => new Map());
}

/** What a firing is about: its budget step, the rule that fired, the spike's day. */
export function stepText(firing, ruleNames = new Map()) {
  if (firing.type === "budget") return `${firing.percent}% of the budget`;
  if (firing.type === "storage_quota") return `${firing.percent}% of the quota`;
  if (firing.type === "usage_spike") return `${firing.meter} on ${firing.day}`;
  const name = firing.rule_id !== null && firing.rule_id !== undefined ? ruleNames.get(firing.rule_id) : null;
  const rule = name ? `“${name}”` : `rule #${firing.rule_id}`;
  return firing.meter ? `${rule} · ${firing.meter}` : rule;
}

/** The threshold and the value it was crossed by, in the currency, the meter's unit or bytes. */
export function crossing(firing, units = new Map()) {
  let threshold = firing.threshold;
  let value = firing.value;
  let unit = "";
  if (firing.type === "storage_quota") {
    threshold = byteSize(firing.threshold);
    value = byteSize(firing.value);
  } else if (firing.currency) {
    unit = firing.currency;
  } else if (firing.meter) {
    unit = units.get(firing.meter) || "";
  }
  const suffix = unit ? ` ${unit}` : "";
  return h("span", { class: "crossing", "data-threshold": firing.threshold, "data-value": firing.value },
    firing.type === "usage_spike" ? h("span", { class: "muted" }, "average ") : null,
    h("span", { class: "threshold" }, `${threshold}${suffix}`), h("span", { class: "arrow", "aria-label": "reached" }, " → "),
    h("strong", { class: "value" }, `${value}${suffix}`));
}

/**
 * A table of firings, newest first. `options.names` (customerNames()) adds
 * the customer column; `units` and `rules` (Map id → name) name what fired.
 * Returns { element, show(firings, { reset, fresh }), ids }: `show` puts
 * newer firings on top and older ones below, each once.
 */
export function firingsTable({ names = null, units = Promise.resolve(new Map()), rules = new Map(), id = null } = {}) {
  const headings = ["Time", ...(names ? ["Customer"] : []), "Type", ["Step or rule", "wide-only"],
    ["Threshold → value", "num"], ["Message", "message"]];
  const { table: element, body } = table(headings, "firings");
  if (id) element.id = id;
  const ids = new Set();
  let unitMap = new Map();
  const ready = Promise.resolve(units).then((found) => { unitMap = found; });

  function row(firing, fresh) {
    return h("tr", { "data-id": firing.id, "data-type": firing.type, "data-customer-id": firing.customer_id,
      "data-percent": firing.percent, class: fresh ? "new" : null },
    h("td", { class: "time" }, localTime(firing.created_at)),
    names ? h("td", { class: "customer" }, names.link(firing.customer_id)) : null,
    h("td", { class: "type" }, typeBadge(firing.type)),
    h("td", { class: "step wide-only" }, stepText(firing, rules)),
    h("td", { class: "num amounts" }, crossing(firing, unitMap)),
    h("td", { class: "message" }, firing.message));
  }

  async function show(firings, { reset = false, fresh = false } = {}) {
    await ready;
    if (reset) {
      body.replaceChildren();
      ids.clear();
    }
    const top = ids.size ? Math.max(...ids) : null; // what is newer than the newest shown goes on top
    const newer = [];
    for (const firing of firings) {
      if (ids.has(firing.id)) continue;
      ids.add(firing.id);
      if (top !== null && firing.id > top) newer.push(row(firing, fresh));
      else body.append(row(firing, fresh && !reset));
    }
    body.querySelector("tr.no-firings")?.remove();
    body.prepend(...newer.sort((a, b) => b.dataset.id - a.dataset.id));
    if (!ids.size) {
      body.append(h("tr", { class: "no-firings" }, h("td", { colspan: headings.length, class: "empty" },
        "Nothing has fired yet.")));
    }
  }
  return { element, show, ids };
}

/**
 * A card of one customer's firings (the customer's page, the portal): the
 * latest `limit`, newest first, and the new ones as they fire (the live
 * stream's `alert.triggered`, or a poll every 5 s without it). Returns the
 * card; `stop()` on it ends the live updates.
 */
export function customerAlertsCard(customerId, { limit = 10, aside = null, id = "customer-alerts", own = false } = {}) {
  const status = messageLine();
  const units = meterUnits();
  const rules = new Map(); // the rules' names, for "step or rule" (a customer reads only its own rules)
  const named = api.get("/v1/alerts", { limit: 1000 }).then((page) => {
    for (const rule of page.data) rules.set(rule.id, rule.name || `#${rule.id}`);
  }, () => {});
  const { element, show } = firingsTable({ units: named.then(() => units), rules, id: `${id}-table` });
  const note = h("p", { class: "muted section-note" }, own
    ? "Your budget steps, alert rules, usage spikes and storage quota crossings, newest first."
    : "This customer’s budget steps, alert rules, usage spikes and storage quota crossings, newest first.");
  const card = h("section", { class: "card alerts-card", id },
    h("div", { class: "section-head" }, h("h2", {}, "Alerts"), aside), note, status, element);
  let gone = false;

  async function load(reset) {
    try {
      const page = await api.get("/v1/alerts/events", { customer_id: customerId, limit });
      if (gone) return;
      await show(page.data, { reset, fresh: !reset });
      showMessage(status, "");
    } catch (error) {
      if (!gone) showApiError(status, "Could not load the alerts", error);
    }
  }
  const off = live.subscribe("alert.triggered", (data) => {
    if (data && data.alert && data.alert.customer_id === customerId) show([data.alert], { fresh: true });
  });
  const stopPolling = live.fallback(() => load(false));
  load(true);
  card.stop = () => {
    gone = true;
    off();
    stopPolling();
  };
  return card;
}
