/* The billing part of customer detail: the subscription (and a form to
   subscribe when there is none), the upcoming invoice, the credit balance and
   the customer's invoices. */

import * as api from "../api.js";
import { addTicks, meterBar, scaleLabels } from "../charts.js";
import { append, display, field, h, messageLine, showMessage, table, whileBusy } from "../dom.js";
import { showApiError } from "../field-errors.js";
import { invoiceBadges, invoiceTitle, localDate, money, percentOf, periodText, statusBadge } from "../format.js";
import { invoiceDetail } from "../invoice-lines.js";

const WRITERS = ["admin", "finance"];
const RECENT_INVOICES = 12;

export function billingSections(customer, role) {
  const canWrite = WRITERS.includes(role);
  const subscription = h("section", { class: "card", id: "subscription" });
  const credits = h("section", { class: "card", id: "credits" });
  const upcoming = h("section", { class: "card", id: "upcoming-invoice" });
  const invoices = h("section", { class: "card", id: "customer-invoices" });
  const units = api.get("/v1/meters", { limit: 1000 })
    .then((meters) => new Map(meters.data.map((meter) => [meter.key, meter.unit])), () => new Map());

  function refresh() {
    loadSubscription(subscription, customer, canWrite, refresh);
    loadUpcoming(upcoming, customer, units);
    loadCredits(credits, customer);
    loadInvoices(invoices, customer);
  }
  refresh();
  return h("div", { class: "billing" }, h("div", { class: "billing-grid" }, subscription, credits), upcoming, invoices);
}

/** Show "Loading…" in `section`; returns a check that is false once a newer load started there. */
function loading(section, title) {
  const mine = (Number(section.dataset.loads) || 0) + 1;
  section.dataset.loads = String(mine);
  section.replaceChildren(h("h2", {}, title), h("p", { class: "muted" }, "Loading…"));
  return () => section.dataset.loads === String(mine);
}

function failed(section, title, error) {
  const line = messageLine();
  showMessage(line, `Could not load: ${error.message}`, "error");
  section.replaceChildren(h("h2", {}, title), line);
}

function fieldList(rows) {
  return h("dl", { class: "fields compact" }, rows.map(([label, value, key]) =>
    h("div", { "data-key": key || label.toLowerCase().replace(/ /g, "-") }, h("dt", {}, label),
      h("dd", {}, value instanceof Node ? value : display(value)))));
}

// -- subscription ---------------------------------------------------------------

async function loadSubscription(section, customer, canWrite, refresh) {
  const title = "Subscription";
  const current = loading(section, title);
  let subscriptions;
  try {
    subscriptions = (await api.get("/v1/subscriptions", { customer_id: customer.id, limit: 100 })).data;
  } catch (error) {
    if (current()) failed(section, title, error);
    return;
  }
  if (!current()) return;
  const latest = subscriptions[subscriptions.length - 1];
  const active = subscriptions.find((item) => item.status === "active");
  section.replaceChildren(h("h2", {}, title));
  if (latest) {
    section.append(fieldList([
      ["Plan", h("code", {}, latest.plan)], ["Status", statusBadge(latest.status)], ["Start", latest.start],
      ["End", latest.end || "open-ended"], ["Billing anchor", latest.billing_anchor, "anchor"],
      ["Coupon", latest.coupon]]));
    if (subscriptions.length > 1) section.append(history(subscriptions));
  } else {
    section.append(h("p", { class: "muted empty-note" }, "No subscription."));
  }
  if (canWrite && active) section.append(cancelControl(active, refresh));
  if (canWrite && !active && !customer.archived) section.append(subscribeForm(customer, latest, refresh));
}

function history(subscriptions) {
  const { table: list, body } = table(["Plan", "Status", "Start", "End"], "subscriptions");
  for (const item of [...subscriptions].reverse()) {
    body.append(h("tr", { "data-id": item.id }, h("td", {}, h("code", {}, item.plan)), h("td", {}, statusBadge(item.status)),
      h("td", {}, item.start), h("td", {}, display(item.end))));
  }
  return h("details", { class: "history" }, h("summary", {}, `All ${subscriptions.length} subscriptions`), list);
}

/** Cancel at the end of the current period; a second click confirms. */
function cancelControl(subscription, refresh) {
  const message = messageLine();
  const button = h("button", { type: "button", class: "secondary small", id: "cancel-subscription" },
    "Cancel at period end");
  let armed = false;
  button.addEventListener("click", async () => {
    if (!armed) {
      armed = true;
      button.textContent = "Confirm: cancel at period end";
      button.classList.add("danger");
      return;
    }
    button.disabled = true;
    try {
      await api.post(`/v1/subscriptions/${subscription.id}/cancel`, {});
      refresh();
    } catch (error) {
      button.disabled = false;
      showApiError(message, "Could not cancel", error);
    }
  });
  return h("div", { class: "actions" }, button, message);
}

/** A new subscription; it starts today, or when the last one ends if that is later. */
function subscribeForm(customer, latest, refresh) {
  const message = messageLine();
  const plan = h("select", { name: "plan", required: true }, h("option", { value: "" }, "Loading plans…"));
  const today = localDate(new Date(), customer.timezone);
  const firstDay = latest && latest.end && latest.end > today ? latest.end : today;
  const start = h("input", { type: "date", name: "start", value: firstDay, required: true });
  const anchor = h("select", { name: "billing_anchor" },
    h("option", { value: "calendar" }, "Calendar month"), h("option", { value: "anniversary" }, "Anniversary of the start"));
  const form = h("form", { class: "form-grid", id: "subscribe", novalidate: true },
    field("Plan", plan), field("Start", start), field("Billing anchor", anchor),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Subscribe")));

  api.get("/v1/plans", { limit: 1000 }).then((plans) => {
    const usable = plans.data.filter((item) => item.currency === customer.currency);
    plan.replaceChildren(h("option", { value: "" }, usable.length ? "Choose a plan" : `No plan in ${customer.currency} yet`),
      ...usable.map((item) => h("option", { value: item.code }, `${item.name} (${item.code})`)));
  }).catch((error) => showMessage(message, `Could not load plans: ${error.message}`, "error"));

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (!plan.value) {
      showMessage(message, "Choose a plan first.", "error");
      return;
    }
    const body = { customer_id: customer.id, plan: plan.value, start: start.value, billing_anchor: anchor.value };
    whileBusy(form, async () => {
      try {
        await api.post("/v1/subscriptions", body);
        refresh();
      } catch (error) {
        showApiError(message, "Could not subscribe", error);
      }
    });
  });
  return h("div", { class: "subscribe" }, h("h3", {}, "Subscribe to a plan"), form, message);
}

// -- upcoming invoice, credits, invoices -------------------------------------------

/**
 * The budget bar (§3 `budget`): the upcoming invoice's subtotal, the spend
 * budget alerts watch, against the monthly budget, with a tick at each
 * alert step (a scale to the largest step when one is past 100%); null
 * without a budget. The percentage is worked out on the exact decimals.
 */
export function budgetBar(invoice, customer) {
  const budget = customer.budget;
  if (!budget || budget.monthly === null || budget.monthly === undefined) return null;
  const percent = percentOf(invoice.subtotal, budget.monthly);
  const shown = percent === null ? "—" : `${Math.floor(percent)}%`;
  const state = percent === null ? "ok" : percent >= 100 ? "full" : percent >= 80 ? "warn" : "ok";
  const title = `Spend ${money(invoice.subtotal, invoice.currency)} of the ${money(budget.monthly, invoice.currency)} monthly budget (${shown})`;
  const stepValues = (budget.alert_at_percent || []).filter((step) => Number.isFinite(step));
  const scale = Math.max(100, ...stepValues);
  const bar = meterBar(Math.max(0, percent ?? 0), scale, title);
  bar.classList.add("budget-bar", state);
  addTicks(bar, stepValues.map((step) => ({
    value: step, reached: percent !== null && percent >= step,
    title: `Alert at ${step}% of the budget${percent !== null && percent >= step ? " (reached)" : ""}`,
  })), scale);
  const steps = stepValues.map((step) => `${step}%`);
  return h("div", { class: `budget ${state}`, "data-percent": percent },
    h("p", { class: "budget-text" }, "Spend ", h("strong", {}, money(invoice.subtotal, invoice.currency)),
      " of the ", h("strong", {}, money(budget.monthly, invoice.currency)), " monthly budget",
      h("span", { class: "muted" }, ` · ${shown}`)),
    h("div", { class: "budget-gauge" }, bar,
      stepValues.length ? scaleLabels(stepValues.map((step) => ({ value: step, label: `${step}%` })), scale) : null),
    steps.length ? h("p", { class: "muted budget-steps" }, `Alerts at ${steps.join(", ")} of the budget.`) : null);
}

export async function loadUpcoming(section, customer, unitsPromise) {
  const title = "Upcoming invoice";
  const current = loading(section, title);
  try {
    const [invoice, units] = await Promise.all([api.get(`/v1/customers/${customer.id}/upcoming-invoice`), unitsPromise]);
    if (!current()) return;
    section.replaceChildren();
    append(section, [
      h("div", { class: "section-head" }, h("h2", {}, title),
        h("p", { class: "muted" }, `${periodText(invoice, customer.timezone)} · to date`)),
      h("p", { class: "upcoming-total" }, "Total so far ", h("strong", {}, money(invoice.total, invoice.currency))),
      budgetBar(invoice, customer),
      invoice.subscription_id ? null
        : h("p", { class: "muted" }, "No active subscription: only resource lines and adjustments would be billed."),
      invoiceDetail(invoice, units)]);
  } catch (error) {
    if (current()) failed(section, title, error);
  }
}

async function loadCredits(section, customer) {
  const title = "Credits";
  const current = loading(section, title);
  try {
    const credits = await api.get(`/v1/customers/${customer.id}/credits`);
    if (!current()) return;
    const entries = [...credits.data].reverse().slice(0, 5);
    section.replaceChildren(h("h2", {}, title),
      h("p", { class: "balance" }, "Balance ", h("strong", { id: "credit-balance" }, money(credits.balance, credits.currency))));
    if (entries.length) {
      const { table: list, body } = table(["Date", ["Amount", "num"], "Reason"], "credits");
      for (const entry of entries) {
        body.append(h("tr", {}, h("td", { class: "time" },
          h("time", { datetime: entry.created_at, title: entry.created_at }, localDate(new Date(entry.created_at), customer.timezone))),
          h("td", { class: "num" }, entry.amount), h("td", {}, display(entry.reason))));
      }
      section.append(list);
    } else {
      section.append(h("p", { class: "muted" }, "No credit granted yet."));
    }
  } catch (error) {
    if (current()) failed(section, title, error);
  }
}

async function loadInvoices(section, customer) {
  const title = "Invoices";
  const current = loading(section, title);
  try {
    const page = await api.get("/v1/invoices", { customer_id: customer.id, limit: RECENT_INVOICES });
    if (!current()) return;
    const { table: list, body } = table(["Invoice", "Status", "Period", ["Total", "num"], ["Amount due", "num wide-only"]],
      "invoices");
    for (const invoice of page.data) {
      body.append(h("tr", { "data-id": invoice.id, "data-status": invoice.status },
        h("td", { class: "invoice" }, h("a", { href: `#/invoices/${invoice.id}` }, invoiceTitle(invoice))),
        h("td", { class: "status" }, invoiceBadges(invoice)),
        h("td", { class: "period" }, periodText(invoice, customer.timezone)),
        h("td", { class: "num money total" }, money(invoice.total, invoice.currency)),
        h("td", { class: "num money wide-only" }, money(invoice.amount_due, invoice.currency))));
    }
    if (!page.data.length) body.append(h("tr", {}, h("td", { colspan: 5, class: "empty" }, "No invoices yet.")));
    section.replaceChildren(h("div", { class: "section-head" }, h("h2", {}, title),
      h("a", { href: `#/invoices?customer_id=${encodeURIComponent(customer.id)}` }, "All invoices →")), list);
  } catch (error) {
    if (current()) failed(section, title, error);
  }
}
