/* One resource on the resources page: its card (occupancy, sessions with
   running timers, start/stop, edit, delete, billing history, utilization
   chart) and the form that creates one. */

import * as api from "../api.js";
import { chart, meterBar } from "../charts.js";
import { display, field, formValues, h, messageLine, showMessage, table, whileBusy } from "../dom.js";
import { clearErrors, markErrors, showApiError } from "../field-errors.js";
import { clockText, costOf, currencyDigits, digitsOf, money } from "../format.js";

const HISTORY = 5; // billing records shown per resource
const DAYS = 7; // the utilization chart's range

// -- the create form ----------------------------------------------------------------

/** The body of a resource form: numbers as numbers when they look like one (the server names bad fields). */
function resourceBody(values, { partial }) {
  const body = {};
  const integer = (text) => (/^\d+$/.test(text) ? Number(text) : text);
  if (!partial || values.name !== undefined) body.name = values.name;
  if (values.description !== undefined) body.description = values.description || null;
  if (values.capacity !== undefined) body.capacity = integer(values.capacity);
  if (values.price_per_minute !== undefined) body.price_per_minute = values.price_per_minute;
  if (values.currency !== undefined) body.currency = values.currency.toUpperCase();
  if (values.max_duration_minutes !== undefined) {
    body.max_duration_minutes = values.max_duration_minutes ? integer(values.max_duration_minutes) : null;
  }
  return body;
}

function resourceFields(resource = null) {
  const value = (name, fallback = null) => (resource ? resource[name] ?? "" : fallback);
  return [
    field("Name", h("input", { name: "name", required: true, maxlength: 200, "data-field": "name", value: value("name") })),
    field("Capacity", h("input", { name: "capacity", type: "number", min: 1, step: 1, required: true, inputmode: "numeric",
      "data-field": "capacity", value: value("capacity", "1") })),
    field("Price per minute", h("input", { name: "price_per_minute", required: true, inputmode: "decimal",
      placeholder: "0.50", "data-field": "price_per_minute", value: value("price_per_minute") })),
    resource ? null : field("Currency", h("input", { name: "currency", value: "USD", maxlength: 3, "data-field": "currency" })),
    field("Max minutes", h("input", { name: "max_duration_minutes", type: "number", min: 1, step: 1,
      inputmode: "numeric", placeholder: "no limit", title: "Longer sessions stop on their own.",
      "data-field": "max_duration_minutes", value: value("max_duration_minutes") })),
    field("Description", h("input", { name: "description", maxlength: 2000, "data-field": "description",
      value: value("description") })),
  ];
}

export function createForm(onCreated) {
  const message = messageLine();
  const form = h("form", { class: "form-grid", id: "create-resource" }, resourceFields(),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Create resource")));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    clearErrors(form);
    const body = resourceBody(formValues(form), { partial: false });
    whileBusy(form, async () => {
      try {
        const created = await api.post("/v1/resources", body);
        showMessage(message, `Created resource “${created.name}” (#${created.id}).`, "ok");
        form.reset();
        onCreated();
      } catch (error) {
        markErrors(form, error.details);
        showApiError(message, "Could not create the resource", error);
      }
    });
  });
  return h("details", { class: "card create", id: "new-resource" }, h("summary", {}, "New resource"), form, message);
}

// -- one resource -------------------------------------------------------------------

export function resourceCard(initial, context) {
  let resource = initial;
  let sessions = []; // [{ session, received }] with `received` the performance.now() of the read
  let analytics = null;
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
  const chartBox = h("div", { class: "utilization" });
  let drawnWidth = 0;
  // Draw at the box's own width (text keeps its size on a phone); again when that width changes.
  // (Redrawn in the next frame, not inside the observer: changing the layout there loops.)
  let frame = 0;
  const resized = new ResizeObserver(() => {
    cancelAnimationFrame(frame);
    frame = requestAnimationFrame(() => {
      if (Math.abs(chartBox.clientWidth - drawnWidth) > 1) redraw();
    });
  });
  resized.observe(chartBox);
  const utilization = h("p", { class: "utilization-summary muted" });

  const startForm = context.canWrite ? startSessionForm() : null;
  const editor = context.canWrite ? editForm() : null;

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
        h("h3", {}, `Utilization, last ${DAYS} days`), utilization, chartBox,
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
      stop.addEventListener("click", () => stopSession(session, stop));
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

  async function stopSession(session, button) {
    button.disabled = true;
    try {
      const stopped = await api.post(`/v1/sessions/${session.id}/stop`, {});
      showMessage(message, `Stopped session #${stopped.id} after ${clockText(stopped.duration_seconds)}, `
        + `billed ${money(stopped.cost, stopped.currency)}.`, "ok");
    } catch (error) {
      showApiError(message, `Could not stop session #${session.id}`, error);
      button.disabled = false;
    }
    context.refresh(id);
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
    analytics = entry || null;
    redraw();
  }

  function redraw() {
    if (!analytics) {
      chartBox.replaceChildren();
      utilization.textContent = "";
      return;
    }
    utilization.replaceChildren(h("strong", {}, `${analytics.utilization_percent}%`), " used · ",
      h("strong", {}, money(analytics.revenue, analytics.currency)), " billed");
    const points = (analytics.days || []).map((day) => ({ label: dayLabel(day.date), value: day.utilization_percent }));
    drawnWidth = chartBox.clientWidth;
    const width = drawnWidth || 320;
    chartBox.replaceChildren(chart(points, { kind: "bar", unit: "%", max: 100, width,
      title: `${resource.name}: utilization per day, last ${DAYS} days (%)` }));
  }

  function problem(error) {
    showApiError(message, "Could not refresh", error);
  }

  // -- start a session ---------------------------------------------------------------
  function startSessionForm() {
    const line = messageLine();
    const customer = h("select", { name: "customer_id", required: true, "data-field": "customer_id" });
    const user = h("input", { name: "user", maxlength: 200, placeholder: "optional", "data-field": "user" });
    const button = h("button", { type: "submit" }, "Start session");
    const form = h("form", { class: "start-session form-inline" },
      field("Customer", customer), field("User", user), button);
    let shownCurrency = null;
    let shownCount = -1;

    form.sync = () => {
      const choices = context.customersIn(resource.currency);
      if (shownCurrency === resource.currency && shownCount === choices.length) return;
      const chosen = customer.value;
      shownCurrency = resource.currency;
      shownCount = choices.length;
      customer.replaceChildren(...(choices.length
        ? choices.map((item) => h("option", { value: item.id, selected: String(item.id) === chosen }, `${item.name} (#${item.id})`))
        : [h("option", { value: "" }, `No ${resource.currency} customer`)]));
      customer.disabled = choices.length === 0;
      button.disabled = choices.length === 0;
    };

    form.addEventListener("submit", (event) => {
      event.preventDefault();
      clearErrors(form);
      delete line.dataset.code;
      const values = formValues(form);
      const body = { resource_id: id, customer_id: Number(values.customer_id) };
      if (values.user) body.user = values.user;
      whileBusy(form, async () => {
        try {
          const session = await api.post("/v1/sessions", body);
          showMessage(line, `Started session #${session.id} for ${context.nameOf(session.customer_id) || `customer #${session.customer_id}`}.`, "ok");
          user.value = "";
        } catch (error) {
          if (error.code === "capacity_full") {
            // The server's own words: "Room A is full: 2 of 2 in use."
            showMessage(line, `Not started. ${error.message} Stop a session first.`, "error");
            line.dataset.code = error.code;
          } else {
            markErrors(form, error.details);
            showApiError(line, "Could not start the session", error);
          }
        }
        context.refresh(id);
      }).finally(() => { form.sync(); if (shownCount === 0) button.disabled = true; });
    });
    form.sync();
    const box = h("div", { class: "start" }, form, line);
    box.sync = form.sync;
    box.seatFreed = () => { // "Room A is full" no longer holds once a seat is free
      if (line.dataset.code === "capacity_full") {
        showMessage(line, "");
        delete line.dataset.code;
      }
    };
    return box;
  }

  // -- edit and delete -----------------------------------------------------------------
  function editForm() {
    const line = messageLine();
    const form = h("form", { class: "form-grid edit-resource" });
    const confirmBox = h("div", { class: "confirm-delete", hidden: true },
      h("p", {}, "Delete this resource? Its past sessions stay as billing records."),
      h("div", { class: "actions" },
        h("button", { type: "button", class: "danger confirm" }, "Delete"),
        h("button", { type: "button", class: "secondary cancel" }, "Cancel")));
    const askDelete = h("button", { type: "button", class: "secondary delete" }, "Delete resource…");
    const details = h("details", { class: "edit" }, h("summary", {}, "Edit or delete"), form,
      h("div", { class: "danger-row" }, askDelete, confirmBox), line);

    function fill() {
      form.replaceChildren(...resourceFields(resource).filter(Boolean),
        h("div", { class: "actions" }, h("button", { type: "submit" }, "Save changes")));
    }
    details.addEventListener("toggle", () => {
      if (details.open) {
        fill(); // the current values, read when opened (an open form keeps what is typed)
        showMessage(line, "");
        confirmBox.hidden = true;
        askDelete.hidden = false;
      }
    });
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      clearErrors(form);
      const body = resourceBody(formValues(form), { partial: true });
      whileBusy(form, async () => {
        try {
          const saved = await api.request("PATCH", `/v1/resources/${id}`, body);
          setResource(saved);
          showMessage(line, `Saved “${saved.name}”.`, "ok");
        } catch (error) {
          markErrors(form, error.details);
          showApiError(line, "Could not save", error);
        }
      });
    });
    askDelete.addEventListener("click", () => {
      confirmBox.hidden = false;
      askDelete.hidden = true;
    });
    confirmBox.querySelector(".cancel").addEventListener("click", () => {
      confirmBox.hidden = true;
      askDelete.hidden = false;
    });
    confirmBox.querySelector(".confirm").addEventListener("click", async (event) => {
      const button = event.currentTarget;
      button.disabled = true;
      try {
        await api.del(`/v1/resources/${id}`);
        context.removed(id);
      } catch (error) {
        // e.g. 409: "Resource 3 has 2 active sessions; stop them first."
        showApiError(line, "Could not delete", error);
        line.dataset.code = error.code;
        confirmBox.hidden = true;
        askDelete.hidden = false;
      } finally {
        button.disabled = false;
      }
    });
    return details;
  }

  setResource(resource);
  return {
    element, setResource, setSessions, setHistory, setAnalytics, tick, active, problem,
    dispose: () => {
      resized.disconnect();
      cancelAnimationFrame(frame);
    },
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

function dayLabel(isoDate) {
  const [year, month, day] = isoDate.split("-").map(Number);
  return new Intl.DateTimeFormat("en", { timeZone: "UTC", month: "short", day: "numeric" })
    .format(new Date(Date.UTC(year, month - 1, day)));
}
