/* Events: newest first, filtered by customer and meter, "load more" with
   next_cursor, and a live tail: the stream's `stats` (every second) show the
   events per second and refresh the list when the server has ingested new
   events; while the stream is down the list refreshes every 5 seconds. */

import * as api from "../api.js";
import { display, field, h, messageLine, showMessage, table, timeElement } from "../dom.js";
import * as live from "../live.js";

const MIN_REFRESH_MS = 1000; // at most one live refresh a second
const PAGE_SIZE = 50;
const MAX_LIMIT = 1000; // the server's largest page

export function render(main, { query }) {
  const status = messageLine();
  const updated = h("span", { class: "muted", id: "events-updated" });
  const rate = h("span", { class: "badge events-rate", id: "events-rate", hidden: true });
  const { table: list, body } = table(["Time", "Customer", "Meter", ["Quantity", "num"], ["Event ID", "wide-only"], ["Properties", "wide-only"]], "events");
  const more = h("button", { type: "button", class: "secondary more", hidden: true }, "Load more");
  const customerInput = h("input", { name: "customer_id", type: "number", min: 1, inputmode: "numeric",
    placeholder: "all", value: query.get("customer_id") || null });
  const meterSelect = h("select", { name: "meter" }, h("option", { value: "" }, "All meters"));
  const auto = h("input", { type: "checkbox", name: "auto", checked: true });
  const form = h("form", { class: "form-inline", id: "events-filter" },
    field("Customer ID", customerInput), field("Meter", meterSelect),
    h("button", { type: "submit" }, "Apply"),
    h("label", { class: "check" }, auto, "Live updates"));

  let filters = { customer_id: query.get("customer_id") || "", meter: query.get("meter") || "" };
  let cursor = null;
  let shown = 0;
  let seen = new Set(); // rows already on screen, to mark new arrivals
  let generation = 0; // a newer load makes the answer of an older one stale
  let loading = false;
  const names = new Map(); // customer id → promise of its name, one request each

  function nameOf(customerId) {
    if (!names.has(customerId)) {
      names.set(customerId, api.get(`/v1/customers/${customerId}`).then((customer) => customer.name, () => null));
    }
    return names.get(customerId);
  }

  /** Load the first page again (mode "reset"), the next page ("more"), or
      re-read what is on screen to pick up new events ("refresh"). */
  async function load(mode) {
    if (mode === "refresh" && loading) return;
    const mine = ++generation;
    loading = true;
    const limit = mode === "refresh" ? Math.min(Math.max(shown, PAGE_SIZE), MAX_LIMIT) : PAGE_SIZE;
    try {
      const page = await api.get("/v1/events", { ...filters, limit, cursor: mode === "more" ? cursor : null });
      if (mine !== generation) return;
      const rows = page.data.map((event) => row(event, mode === "refresh" && !seen.has(key(event)), nameOf));
      if (mode === "more") {
        body.append(...rows);
        shown += rows.length;
      } else {
        body.replaceChildren(...rows);
        shown = rows.length;
        if (rows.length === 0) body.append(h("tr", {}, h("td", { colspan: 6, class: "empty" }, "No events match.")));
      }
      page.data.forEach((event) => seen.add(key(event)));
      cursor = page.next_cursor;
      more.hidden = !cursor;
      updated.textContent = `Updated ${new Date().toLocaleTimeString()}`;
      showMessage(status, "");
    } catch (error) {
      if (mine === generation) showMessage(status, `Could not load events: ${error.message}`, "error");
    } finally {
      if (mine === generation) loading = false;
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    filters = { customer_id: customerInput.value.trim(), meter: meterSelect.value };
    seen = new Set();
    load("reset");
  });
  more.addEventListener("click", () => load("more"));
  // Live: refresh when the server's count of ingested events moves; polling every 5 s otherwise.
  let lastTotal = null;
  let changed = false; // new events the list has not been refreshed for yet
  let lastRefresh = 0;
  const stopStats = live.subscribe("stats", (stats) => {
    if (!stats || typeof stats.events_total !== "number") return;
    rate.hidden = false;
    rate.textContent = `${stats.events_per_second} event${stats.events_per_second === 1 ? "" : "s"}/s`;
    if (lastTotal !== null && stats.events_total !== lastTotal) changed = true;
    lastTotal = stats.events_total;
    if (changed && auto.checked && !loading && Date.now() - lastRefresh >= MIN_REFRESH_MS) {
      changed = false;
      lastRefresh = Date.now();
      load("refresh");
    }
  });
  const stopState = live.onState((now) => { if (!now.connected) rate.hidden = true; });
  const stopPolling = live.fallback(() => {
    if (auto.checked && !document.hidden) load("refresh");
  });

  main.append(
    h("div", { class: "page-head" }, h("h1", {}, "Events"), rate, updated),
    h("section", { class: "card" }, form),
    h("section", { class: "card" }, status, list, more));

  loadMeters(meterSelect, filters.meter);
  load("reset");
  return () => {
    stopStats();
    stopState();
    stopPolling();
  };
}

function key(event) {
  return `${event.customer_id}/${event.id}`;
}

async function loadMeters(select, chosen) {
  try {
    const page = await api.get("/v1/meters", { limit: 1000 });
    select.append(...page.data.map((meter) => h("option", { value: meter.key, selected: meter.key === chosen }, meter.key)));
  } catch {
    // The filter still works without the list; the events table shows errors.
  }
}

function row(event, isNew, nameOf) {
  const customer = h("a", { href: `#/customers/${event.customer_id}` }, `#${event.customer_id}`);
  nameOf(event.customer_id).then((name) => { if (name) customer.textContent = name; });
  return h("tr", { class: isNew ? "new" : null, "data-event": event.id, "data-customer": event.customer_id },
    h("td", { class: "time" }, timeElement(event.timestamp), event.late ? h("span", { class: "badge" }, "late") : null),
    h("td", { class: "customer" }, customer),
    h("td", { class: "meter" }, display(event.meter)),
    h("td", { class: "num" }, display(event.quantity)),
    h("td", { class: "wide-only" }, h("code", {}, event.id)),
    h("td", { class: "wide-only props" }, Object.keys(event.properties || {}).length ? JSON.stringify(event.properties) : "—"));
}
