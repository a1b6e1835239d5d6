/* Resources and sessions (§6, §11): a card per resource with its live
   occupancy (active of capacity), price, the sessions running (a ticking
   timer and the cost so far), start and stop (admin, finance), edit and
   delete, the recent billing records with totals, and the utilization of the
   last 7 days as an SVG chart.

   Updates come from the live stream (session.started / session.stopped
   refresh that resource; resource.* events the list); while the stream is
   down the page polls every 5 s (live.fallback). Money stays the server's
   decimal strings; the cost so far between two reads is computed in exact
   integer arithmetic (format.costOf) for display only. */

import * as api from "../api.js";
import { chart } from "../charts.js";
import { display, h, messageLine, showMessage } from "../dom.js";
import { showApiError } from "../field-errors.js";
import { addDays, costOf, localDate } from "../format.js";
import * as live from "../live.js";
import { createForm, resourceCard } from "./resource-card.js";

/** Who may open this page (the server answers 403 to others). */
export const ROLES = ["admin", "finance", "customer_success", "sales", "viewer"];
const WRITERS = ["admin", "finance"];
const HISTORY = 5; // billing records shown per resource
const DAYS = 7; // the utilization chart's range
const MAX_LIMIT = 1000;
const DEBOUNCE_MS = 120; // a burst of events for one resource becomes one refresh

export function render(main, { role }) {
  const canWrite = WRITERS.includes(role);
  const status = messageLine();
  const summary = h("p", { class: "muted resources-summary", id: "resources-summary" }, "Loading…");
  const list = h("div", { class: "resource-list", id: "resources" });
  const cards = new Map(); // resource id → card
  const pending = new Map(); // resource id → { timer, busy, again }
  let customers = [];
  const names = new Map(); // customer id → name
  let loaded = false;
  let gone = false; // the page was left: late answers change nothing
  let fullLoad = null; // the promise of a running loadAll
  let reloadAgain = false;
  let mismatches = 0;

  const context = {
    canWrite,
    nameOf: (id) => names.get(id),
    customersIn: (currency) => customers.filter((customer) => customer.currency === currency),
    refresh: (id) => schedule(id),
    removed: (id) => removeCard(id),
  };

  function range() {
    const zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
    const today = localDate(new Date(), zone);
    return { from: addDays(today, -(DAYS - 1)), to: addDays(today, 1), timezone: zone };
  }

  async function loadCustomers() {
    const found = [];
    let cursor = null;
    do { // every page: the start form offers any customer of the resource's currency
      const page = await api.get("/v1/customers", { limit: MAX_LIMIT, cursor });
      found.push(...page.data);
      cursor = page.next_cursor;
    } while (cursor && found.length < 10 * MAX_LIMIT);
    for (const customer of found) names.set(customer.id, customer.name);
    customers = found.filter((customer) => !customer.archived);
    for (const card of cards.values()) card.setCustomers();
  }

  /** Everything again: the resources, all running sessions, the chart data and each history. */
  function loadAll() {
    if (fullLoad) {
      reloadAgain = true; // what changed meanwhile may be missing from the answers on their way
      return fullLoad;
    }
    reloadAgain = false;
    fullLoad = (async () => {
      try {
        const [resources, sessions, analytics] = await Promise.all([
          api.get("/v1/resources", { limit: MAX_LIMIT }),
          api.get("/v1/sessions", { active: "true", limit: MAX_LIMIT }),
          api.get("/v1/analytics/resources", range()).catch(() => ({ resources: [] })), // the charts are extra
          loadCustomers().catch(() => {}), // names are a nicety; the select says when none are there
        ]);
        if (gone) return;
        const histories = await Promise.all(resources.data.map((resource) =>
          api.get("/v1/billing-records", { resource_id: resource.id, limit: HISTORY }).catch((error) => ({ error }))));
        if (gone) return;
        const seen = new Set();
        resources.data.forEach((resource, index) => {
          seen.add(resource.id);
          let card = cards.get(resource.id);
          if (!card) {
            card = resourceCard(resource, context);
            cards.set(resource.id, card);
          }
          list.append(card.element); // in the server's order (by id)
          card.setResource(resource);
          card.setSessions(sessions.data.filter((session) => session.resource_id === resource.id));
          card.setHistory(histories[index]);
          card.setAnalytics(analytics.resources.find((entry) => entry.id === resource.id));
        });
        for (const id of [...cards.keys()]) if (!seen.has(id)) removeCard(id);
        loaded = true;
        showEmpty();
        showSummary();
        showMessage(status, "");
      } catch (error) {
        if (!gone) showApiError(status, "Could not load the resources", error);
      } finally {
        fullLoad = null;
        if (reloadAgain && !gone) loadAll();
      }
    })();
    return fullLoad;
  }

  /** One resource again: itself, its running sessions, its history and chart. */
  async function refreshOne(id) {
    const card = cards.get(id);
    if (!card) {
      await loadAll(); // a resource this page has not seen yet
      return;
    }
    try {
      const [resource, sessions, history, analytics] = await Promise.all([
        api.get(`/v1/resources/${id}`),
        api.get("/v1/sessions", { active: "true", resource_id: id, limit: MAX_LIMIT }),
        api.get("/v1/billing-records", { resource_id: id, limit: HISTORY }).catch((error) => ({ error })),
        api.get("/v1/analytics/resources", { ...range(), resource_id: id }).catch(() => null),
      ]);
      if (gone || cards.get(id) !== card) return;
      card.setResource(resource);
      card.setSessions(sessions.data);
      card.setHistory(history);
      if (analytics) card.setAnalytics(analytics.resources[0]);
      showSummary();
    } catch (error) {
      if (gone) return;
      if (error.status === 404) removeCard(id);
      else card.problem(error);
    }
  }

  function schedule(id) {
    let entry = pending.get(id);
    if (!entry) {
      entry = { timer: null, busy: false, again: false };
      pending.set(id, entry);
    }
    if (entry.busy) {
      entry.again = true;
      return;
    }
    clearTimeout(entry.timer);
    entry.timer = setTimeout(async () => {
      entry.busy = true;
      try {
        await refreshOne(id);
      } finally {
        entry.busy = false;
        if (entry.again && !gone) {
          entry.again = false;
          schedule(id);
        }
      }
    }, DEBOUNCE_MS);
  }

  function removeCard(id) {
    const card = cards.get(id);
    if (!card) return;
    card.element.remove();
    card.dispose();
    cards.delete(id);
    showEmpty();
    showSummary();
  }

  const empty = h("p", { class: "empty card", id: "no-resources", hidden: true },
    canWrite ? "No resources yet: create the first one above." : "No resources yet.");

  function showEmpty() {
    empty.hidden = !loaded || cards.size > 0;
  }

  function activeTotal() {
    let total = 0;
    for (const card of cards.values()) total += card.active();
    return total;
  }

  function showSummary() {
    if (!loaded) return;
    const count = cards.size;
    const active = activeTotal();
    summary.textContent = `${count} resource${count === 1 ? "" : "s"} · ${active} session${active === 1 ? "" : "s"} running`;
  }

  // -- live updates ------------------------------------------------------------
  const stopLive = [
    live.subscribe("session.started", (data) => data?.session && schedule(data.session.resource_id)),
    live.subscribe("session.stopped", (data) => data?.session && schedule(data.session.resource_id)),
    live.subscribe("resource.created", () => loadAll()),
    live.subscribe("resource.updated", (data) => {
      const card = data?.resource && cards.get(data.resource.id);
      if (card) card.setResource(data.resource);
      else loadAll();
    }),
    live.subscribe("resource.deleted", (data) => data?.resource && removeCard(data.resource.id)),
    live.subscribe("stats", (data) => {
      // The server counts every running session: if ours disagree twice in a row, something was missed.
      if (!loaded || fullLoad || !data || typeof data.active_sessions !== "number") return;
      mismatches = data.active_sessions === activeTotal() ? 0 : mismatches + 1;
      if (mismatches >= 2) {
        mismatches = 0;
        loadAll();
      }
    }),
    live.fallback(() => loadAll()),
  ];
  const ticker = setInterval(() => {
    for (const card of cards.values()) card.tick();
  }, 1000);

  main.append(
    h("div", { class: "page-head" }, h("h1", {}, "Resources"), summary),
    ...(canWrite ? [createForm(() => loadAll())] : []), // (Node.append prints a null as "null")
    status, empty, list);
  loadAll();

  return () => {
    gone = true;
    stopLive.forEach((off) => off());
    clearInterval(ticker);
    for (const card of cards.values()) card.dispose();
    for (const entry of pending.values()) clearTimeout(entry.timer);
  };
}
