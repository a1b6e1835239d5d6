/* One resource on the resources page: its card (occupancy, sessions with
   running timers, billing history, the utilization chart). The forms and
   buttons that act on resources (create, start/stop a session, edit, delete)
   are in resource-card-actions.js, the chart in resource-chart.js. */

import { meterBar } from "../charts.js";
import { display, h, messageLine, table } from "../dom.js";
import { showApiError } from "../field-errors.js";
import { clockText, costOf, currencyDigits, digitsOf, money } from "../format.js";
import { editForm, startSessionForm, stopSession } from "./resource-card-actions.js";
import { DAYS, utilizationChart } from "./resource-chart.js";

export { createForm } from "./resource-card-actions.js";

const HISTORY = 5; // billing records shown per resource

// -- one resource -------------------------------------------------------------------

export function resourceCard(initial, context) {
  let resource = initial;
  let sessions = []; // [{ session, received }] with `received` the performance.now() of the read
  let sessionsShown = false; // after the first list, new rows are marked as new
  const id = resource.id;
  const message = messageLine();
  message.classList.add("card-message");

  const title = h("h2", {});
  const currencyBadge = h("span", { class: "badge currency" });
  const price = h("p", { class: "price" });
  const description = h("p", { class: "description muted" });
  const occupancy = h("div", { class: "occupancy" });

  // sessions running
  const { table: sessionsBox, body: sessionRows } = table(["Customer · user", ["Started (UTC)", "wide-only"],
    ["Elapsed", "num"], ["Cost so far", "num"], ...(context.canWrite ? [["", "actions-head"]] : [])], "sessions");
  const sessionsEmpty = h("p", { class: "muted none-running" }, "No session running.");

  // billing history
  const { table: historyBox, body: historyRows } = table([["Ended (UTC)", "time"], "Customer · user",
    ["Minutes", "num"], ["Cost", "num"]], "billing");
  const totals = h("p", { class: "billing-totals" });
  const utilization = utilizationChart(() => resource.name);

  // what the actions need of the card
  const card = { id, context, message, current: () => resource, onSaved: (saved) => setResource(saved) };
  const startForm = context.canWrite ? startSessionForm(card) : null;
  const editor = context.canWrite ? editForm(card) : null;

  const element = h("article", { class: "card resource", "data-id": id },
    h("header", { class: "resource-head" },
      h("div", { class: "resource-title" }, title, currencyBadge),
      price, description),
    message,
    h("div", { class: "resource-body" },
      h("section", { class: "resource-now" },
        occupancy,
        startForm,
        h("h3", {}, "Running"), sessionsEmpty, sessionsBox),
      h("section", { class: "resource-history" },
        h("h3", {}, `Utilization, last ${DAYS} days`), utilization.summary, utilization.box,
        h("h3", {}, "Billing history"), totals, historyBox)),
    editor);

  // -- parts ----------------------------------------------------------------------
  function setResource(next) {
    resource = { ...resource, ...next };
    title.textContent = resource.name;
    currencyBadge.textContent = resource.currency;
    const limits = [`capacity ${resource.capacity}`];
    if (resource.max_duration_minutes) limits.push(`at most ${resource.max_duration_minutes} min a session`);
    price.replaceChildren(h("strong", { class: "per-minute" }, money(resource.price_per_minute, resource.currency)),
      " per minute", h("span", { class: "muted" }, ` · ${limits.join(" · ")}`));
    description.textContent = resource.description || "";
    description.hidden = !resource.description;
    showOccupancy();
    if (startForm) startForm.sync();
  }

  function active() {
    return typeof resource.active === "number" ? resource.active : sessions.length;
  }

  function showOccupancy() {
    const used = active();
    const { capacity } = resource;
    const full = used >= capacity;
    element.classList.toggle("full", full);
    if (!full && startForm) startForm.seatFreed();
    occupancy.dataset.active = used;
    occupancy.dataset.capacity = capacity;
    occupancy.replaceChildren(
      h("div", { class: "occupancy-text" },
        h("span", { class: "occupancy-count" }, `${used} / ${capacity}`),
        h("span", { class: "muted" }, " in use"),
        full ? h("span", { class: "badge full-badge" }, "full")
          : h("span", { class: "muted available" }, ` · ${Math.max(0, capacity - used)} free`)),
      meterBar(used, capacity, `${resource.name}: ${used} of ${capacity} in use`));
  }

  function setSessions(list) {
    const before = new Set(sessions.map((entry) => entry.session.id));
    const received = performance.now();
    sessions = list.map((session) => ({ session, received }));
    // The list is the truth for the bar too (a session started since the resource was read).
    resource = { ...resource, active: list.length, available: Math.max(0, resource.capacity - list.length) };
    showOccupancy();
    sessionRows.replaceChildren(...sessions.map((entry) => sessionRow(entry, sessionsShown && !before.has(entry.session.id))));
    sessionsShown = true;
    sessionsEmpty.hidden = sessions.length > 0;
    sessionsBox.hidden = sessions.length === 0;
    tick();
  }

  function sessionRow(entry, fresh) {
    const { session } = entry;
    const cells = [
      h("td", { class: "customer" }, customerLink(session.customer_id, context), userLine(session.user)),
      h("td", { class: "wide-only time started" }, shortTime(session.started_at)),
      h("td", { class: "num elapsed" }),
      h("td", { class: "num money cost-so-far" }),
    ];
    if (context.canWrite) {
      const stop = h("button", { type: "button", class: "secondary stop", "data-session": session.id }, "Stop");
      stop.addEventListener("click", () => stopSession(session, stop, card));
      cells.push(h("td", { class: "row-actions" }, stop));
    }
    const row = h("tr", { "data-session": session.id, class: fresh ? "new" : null }, cells);
    entry.row = row;
    return row;
  }

  /** Advance the running timers by the time since the server's `elapsed_seconds` was read. */
  function tick() {
    const now = performance.now();
    for (const entry of sessions) {
      if (!entry.row) continue;
      const { session } = entry;
      const elapsed = (session.elapsed_seconds ?? 0) + Math.floor((now - entry.received) / 1000);
      const digits = session.cost_so_far != null ? digitsOf(session.cost_so_far) : currencyDigits(session.currency);
      const cost = costOf(elapsed, session.price_per_minute, digits) ?? session.cost_so_far;
      const elapsedCell = entry.row.querySelector(".elapsed");
      elapsedCell.textContent = clockText(elapsed);
      elapsedCell.dataset.seconds = elapsed;
      entry.row.querySelector(".cost-so-far").textContent = money(cost, session.currency);
    }
  }

  function setHistory(reply) {
    if (!reply || reply.error) {
      historyRows.replaceChildren(h("tr", {}, h("td", { colspan: 4, class: "empty" },
        `Could not load the billing records${reply?.error ? `: ${reply.error.message}` : "."}`)));
      return;
    }
    const rows = reply.data.map((record) => h("tr", { "data-session": record.id },
      h("td", { class: "time ended" }, shortTime(record.ended_at, { always: "date" })),
      h("td", { class: "customer" }, customerLink(record.customer_id, context), userLine(record.user)),
      h("td", { class: "num minutes" }, display(record.minutes)),
      h("td", { class: "num money cost" }, money(record.cost, record.currency),
        record.auto_stopped ? h("span", { class: "badge", title: "Stopped at the maximum duration" }, "auto") : null)));
    if (!rows.length) rows.push(h("tr", {}, h("td", { colspan: 4, class: "empty" }, "No stopped session yet.")));
    historyRows.replaceChildren(...rows);
    const sums = Object.entries(reply.totals || {});
    totals.replaceChildren(...(sums.length
      ? [h("span", { class: "muted" }, "All time: "), ...sums.map(([currency, sum], index) => h("span", {
        class: "total", "data-currency": currency },
      index ? " · " : "",
      `${sum.sessions} session${sum.sessions === 1 ? "" : "s"}, ${display(sum.minutes)} min, `,
      h("strong", {}, money(sum.amount, currency))))]
      : [h("span", { class: "muted" }, "Nothing billed yet.")]));
    if (reply.next_cursor) totals.append(h("span", { class: "muted" }, ` (the latest ${HISTORY} below)`));
  }

  function setAnalytics(entry) {
    utilization.set(entry);
  }

  function problem(error) {
    showApiError(message, "Could not refresh", error);
  }

  setResource(resource);
  return {
    element, setResource, setSessions, setHistory, setAnalytics, tick, active, problem,
    dispose: () => utilization.dispose(),
    setCustomers: () => startForm && startForm.sync(),
  };
}

function customerLink(customerId, context) {
  return h("a", { href: `#/customers/${customerId}` }, context.nameOf(customerId) || `#${customerId}`);
}

/** A UTC instant, short: the time of day when it is today (unless `always: "date"`),
    else the date and minute (the columns say UTC; the exact instant stays in
    `datetime` and the tooltip). */
function shortTime(text, { always = "" } = {}) {
  if (!text) return "—";
  const full = String(text).replace("T", " ").replace(/\.\d+/, "").replace(/Z$/, " UTC");
  const today = new Date().toISOString().slice(0, 10);
  const label = text.slice(0, 10) === today && always !== "date" ? text.slice(11, 19)
    : `${text.slice(0, 10)} ${text.slice(11, 16)}`;
  return h("time", { datetime: text, title: full }, label);
}

/** Who used it (the optional `user` of a session), under the customer. */
function userLine(user) {
  return user ? h("span", { class: "user" }, user) : null;
}
