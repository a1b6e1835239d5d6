/* Alerts (§10, §11), for staff: the alert rules (admin and finance create
   and delete them: alert-form.js), the customers' budgets, and what fired
   recently, newest first, with new firings added as they happen (the live
   stream's `alert.triggered`; a poll every 5 s without it). Times are the
   browser's, which the page names. */

import * as api from "../api.js";
import { h, messageLine, showMessage, table } from "../dom.js";
import { showApiError } from "../field-errors.js";
import { money } from "../format.js";
import * as live from "../live.js";
import { ruleForm } from "../alert-form.js";
import { browserZone, customerNames, firingsTable, meterUnits, typeBadge } from "../alert-list.js";

/** Who may open this page (the server answers 403 to others). */
export const ROLES = ["admin", "finance", "customer_success", "sales", "viewer"];
const WRITERS = ["admin", "finance"];
const FIRINGS_PAGE = 50;

export function render(main, { role }) {
  document.title = "Alerts · Meterline";
  const canWrite = WRITERS.includes(role);
  const names = customerNames();
  const units = meterUnits();
  const ruleNames = new Map(); // rule id → name, for the firings' "step or rule"
  let gone = false;

  const rules = rulesSection(canWrite, names, units, ruleNames, () => gone);
  const budgets = budgetsSection(names, () => gone);
  const firings = firingsSection(names, units, ruleNames, () => gone);
  main.append(
    h("div", { class: "page-head" }, h("h1", {}, "Alerts"),
      h("p", { class: "muted", id: "alerts-zone" }, "Times in ", h("strong", {}, browserZone()), " (this browser’s timezone).")),
    canWrite ? ruleForm(() => rules.load(true)) : h("p", { class: "muted read-only", id: "alerts-read-only" },
      "Read only: admin and finance create and delete alert rules."),
    rules.element, budgets.element,
    firings.element);

  // The rules first: the firings name the rules that fired.
  rules.load(true).finally(() => { if (!gone) firings.load(true); });
  budgets.load(true);
  const off = live.subscribe("alert.triggered", (data) => {
    if (data && data.alert) firings.add([data.alert]);
  });
  const stopPolling = live.fallback(() => firings.refresh());
  return () => {
    gone = true;
    off();
    stopPolling();
  };
}

/** A "Load more" button and the paging state of one list. */
function pager(fetchPage, onPage, status, errorText, isGone) {
  const more = h("button", { type: "button", class: "secondary more", hidden: true }, "Load more");
  let cursor = null;
  let loads = 0;
  let failed = false; // the status line shows a load error (and not the outcome of an action)
  async function load(reset) {
    const mine = ++loads;
    try {
      const page = await fetchPage(reset ? null : cursor);
      if (isGone() || mine !== loads) return;
      await onPage(page, reset);
      cursor = page.next_cursor;
      more.hidden = !cursor;
      if (failed) showMessage(status, "");
      failed = false;
    } catch (error) {
      if (isGone() || mine !== loads) return;
      failed = true;
      showApiError(status, errorText, error);
    }
  }
  more.addEventListener("click", () => load(false));
  return { more, load };
}

// -- rules ------------------------------------------------------------------------------

function rulesSection(canWrite, names, units, ruleNames, isGone) {
  const status = messageLine();
  const headings = ["Name", "Customer", "Type", "Meter or currency", ["Threshold", "num"]];
  if (canWrite) headings.push(["", "row-actions"]);
  const { table: list, body } = table(headings, "alert-rules");
  const { more, load } = pager((cursor) => api.get("/v1/alerts", { cursor }), async (page, reset) => {
    const unitMap = await units;
    if (reset) body.replaceChildren();
    for (const rule of page.data) {
      ruleNames.set(rule.id, rule.name || `#${rule.id}`);
      body.append(ruleRow(rule, { canWrite, names, unitMap, status, reload: () => load(true) }));
    }
    if (reset && !page.data.length) {
      body.append(h("tr", {}, h("td", { colspan: headings.length, class: "empty" },
        "No alert rules yet. Budgets set on customers alert without one.")));
    }
  }, status, "Could not load the alert rules", isGone);
  const element = h("section", { class: "card", id: "alert-rules" },
    h("div", { class: "section-head" }, h("h2", {}, "Rules")),
    h("p", { class: "muted section-note" }, "Each rule fires at most once per customer and billing period."),
    status, list, more);
  return { element, load };
}

function ruleRow(rule, { canWrite, names, unitMap, status, reload }) {
  const unit = rule.type === "spend" ? rule.currency : unitMap.get(rule.meter) || "";
  return h("tr", { "data-id": rule.id, "data-type": rule.type },
    h("td", { class: "name" }, rule.name ? rule.name : h("span", { class: "muted" }, `Rule #${rule.id}`)),
    h("td", { class: "customer" }, rule.customer_id === null
      ? h("span", { class: "muted every" }, "every customer") : names.link(rule.customer_id)),
    h("td", { class: "type" }, typeBadge(rule.type)),
    h("td", { class: "watches" }, rule.type === "usage" ? h("code", {}, rule.meter) : rule.currency),
    h("td", { class: "num threshold" }, unit ? `${rule.threshold} ${unit}` : rule.threshold),
    canWrite ? h("td", { class: "row-actions" }, deleteButton(rule, status, reload)) : null);
}

/** Delete a rule: the first click asks, the second deletes (Escape or leaving the button cancels). */
function deleteButton(rule, status, reload) {
  const title = rule.name ? `“${rule.name}”` : `#${rule.id}`;
  const button = h("button", { type: "button", class: "small secondary delete delete-rule",
    "aria-label": `Delete the alert rule ${title}` }, "Delete");
  let armed = false;
  const disarm = () => {
    armed = false;
    button.textContent = "Delete";
    button.classList.remove("armed");
  };
  button.addEventListener("blur", disarm);
  button.addEventListener("keydown", (event) => { if (event.key === "Escape") disarm(); });
  button.addEventListener("click", async () => {
    if (!armed) {
      armed = true;
      button.textContent = "Confirm delete";
      button.classList.add("armed");
      showMessage(status, `Click “Confirm delete” to delete the rule ${title}; what it fired stays.`, "info");
      return;
    }
    button.disabled = true;
    try {
      await api.del(`/v1/alerts/${rule.id}`);
      showMessage(status, `Deleted the alert rule ${title}. What it fired stays listed below.`, "ok");
      reload();
    } catch (error) {
      button.disabled = false;
      disarm();
      showApiError(status, "Could not delete the alert rule", error);
    }
  });
  return button;
}

// -- budgets ----------------------------------------------------------------------------

function budgetsSection(names, isGone) {
  const status = messageLine();
  const { table: list, body } = table(["Customer", ["Monthly", "num"], "Alerts at"], "alert-budgets");
  const { more, load } = pager((cursor) => api.get("/v1/alerts/budgets", { cursor }), (page, reset) => {
    if (reset) body.replaceChildren();
    for (const budget of page.data) {
      names.known(budget.customer_id, budget.customer_name);
      body.append(h("tr", { "data-customer-id": budget.customer_id },
        h("td", { class: "customer" }, h("a", { href: `#/customers/${budget.customer_id}` }, budget.customer_name)),
        h("td", { class: "num monthly" }, money(budget.monthly, budget.currency)),
        h("td", { class: "steps" }, budget.alert_at_percent.map((step) => `${step}%`).join(", "))));
    }
    if (reset && !page.data.length) {
      body.append(h("tr", {}, h("td", { colspan: 3, class: "empty" }, "No customer has a budget yet.")));
    }
  }, status, "Could not load the budgets", isGone);
  const element = h("section", { class: "card", id: "alert-budgets" },
    h("div", { class: "section-head" }, h("h2", {}, "Budgets")),
    h("p", { class: "muted section-note" }, "A monthly amount on the customer; each step alerts once a period."),
    status, list, more);
  return { element, load };
}

// -- firings ----------------------------------------------------------------------------

function firingsSection(names, units, ruleNames, isGone) {
  const status = messageLine();
  const firings = firingsTable({ names, units, rules: ruleNames, id: "alert-firings-table" });
  const { more, load } = pager((cursor) => api.get("/v1/alerts/events", { cursor, limit: FIRINGS_PAGE }),
    (page, reset) => firings.show(page.data, { reset }), status, "Could not load what fired", isGone);
  const element = h("section", { class: "card", id: "alert-firings" },
    h("div", { class: "section-head" }, h("h2", {}, "Recent firings"),
      h("p", { class: "muted" }, "Newest first; new ones appear as they fire.")),
    status, firings.element, more);

  /** The newest page again, for what fired while the stream was down (only the new ones are added). */
  async function refresh() {
    try {
      const page = await api.get("/v1/alerts/events", { limit: FIRINGS_PAGE });
      if (!isGone()) await firings.show(page.data, { fresh: true });
    } catch (error) {
      if (!isGone()) showApiError(status, "Could not load what fired", error);
    }
  }
  const add = (found) => firings.show(found, { fresh: true });
  return { element, load, refresh, add };
}
