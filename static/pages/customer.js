/* Customer detail: the customer's fields, its billing (subscription,
   upcoming invoice with the budget bar, credits, invoices:
   customer-billing.js), what its alerts fired (alert-list.js, live), its
   recommendations (recommendations.js), and day-by-day
   usage per meter as SVG charts plus one table (rows are days, columns are
   meters). */

import * as api from "../api.js";
import { display, field, h, messageLine, showMessage, timeElement } from "../dom.js";
import { addDays, localDate } from "../format.js";
import { drawMeter } from "../usage-charts.js";
import { recommendationsCard } from "../recommendations.js";
import { customerAlertsCard } from "../alert-list.js";
import { billingSections } from "./customer-billing.js";

const DEFAULT_DAYS = 30;

export function render(main, { params, role }) {
  const customerId = params[0];
  const status = messageLine();
  const heading = h("h1", {}, `Customer #${customerId}`);
  const details = h("dl", { class: "fields" });
  const billing = h("div", { class: "billing-slot" });
  const usage = h("section", { class: "usage" });
  main.append(
    h("div", { class: "page-head" }, h("a", { href: "#/customers", class: "back" }, "← Customers"), heading),
    status,
    h("section", { class: "card" }, details,
      h("p", {}, h("a", { href: `#/events?customer_id=${encodeURIComponent(customerId)}` }, "See this customer’s events →"))),
    billing,
    usage);

  let gone = false;
  let alerts = null;
  api.get(`/v1/customers/${customerId}`).then((customer) => {
    if (gone) return;
    heading.textContent = customer.name;
    document.title = `${customer.name} · Meterline`;
    details.append(...fieldRows(customer));
    alerts = customerAlertsCard(customer.id, { aside: h("a", { href: "#/alerts" }, "Alert rules →") });
    billing.append(billingSections(customer, role), alerts, recommendationsCard(customer.id));
    usage.append(usageSection(customer));
  }).catch((error) => showMessage(status, `Could not load the customer: ${error.message}`, "error"));
  return () => {
    gone = true;
    if (alerts) alerts.stop();
  };
}

function fieldRows(customer) {
  const shown = [
    ["ID", customer.id], ["External ID", customer.external_id], ["E-mail", customer.email],
    ["Timezone", customer.timezone], ["Currency", customer.currency],
    ["Billing e-mail", customer.billing_email], ["Tax rate (%)", customer.tax_rate],
    ["Net terms (days)", customer.net_terms_days], ["Archived", customer.archived ? "yes" : "no"],
  ];
  const rows = shown.map(([label, value]) => h("div", {}, h("dt", {}, label), h("dd", {}, display(value))));
  rows.push(h("div", {}, h("dt", {}, "Created"), h("dd", {}, timeElement(customer.created_at))));
  return rows;
}

function usageSection(customer) {
  const today = localDate(new Date(), customer.timezone);
  const from = h("input", { type: "date", name: "from", value: addDays(today, 1 - DEFAULT_DAYS), required: true });
  const to = h("input", { type: "date", name: "to", value: today, required: true });
  const message = messageLine();
  const charts = h("div", { class: "charts" });
  const tableBox = h("div", { class: "card" });
  const form = h("form", { class: "form-inline", id: "usage-range" },
    field("From", from), field("To (inclusive)", to), h("button", { type: "submit" }, "Show usage"));

  async function load() {
    showMessage(message, "Loading usage…", "info");
    try {
      const [reply, meters] = await Promise.all([
        api.get(`/v1/customers/${customer.id}/usage`, { from: from.value, to: addDays(to.value, 1), window: "day" }),
        api.get("/v1/meters", { limit: 1000 }).catch(() => ({ data: [] }))]); // names are a nicety
      const names = new Map(meters.data.map((meter) => [meter.key, meter.name]));
      charts.replaceChildren();
      for (const entry of reply.usage) {
        drawMeter(charts, entry, { name: names.get(entry.meter), timeZone: customer.timezone });
      }
      tableBox.replaceChildren(usageTable(reply.usage, customer.timezone));
      if (reply.usage.length === 0) charts.append(h("p", { class: "empty" }, "No meters yet."));
      showMessage(message, "");
    } catch (error) {
      showMessage(message, `Could not load usage: ${error.message}`, "error");
    }
  }

  form.addEventListener("submit", (event) => { event.preventDefault(); load(); });
  load();
  return h("div", {}, h("h2", {}, "Usage by day"), h("div", { class: "card" }, form, message), charts, tableBox);
}

function usageTable(usage, timeZone) {
  const windows = usage.length ? usage[0].windows || [] : [];
  const head = h("tr", {}, h("th", { scope: "col" }, "Day"),
    usage.map((entry) => h("th", { scope: "col", class: "num" }, `${entry.meter} (${entry.unit})`)));
  const rows = windows.map((window, index) => h("tr", {},
    h("td", { class: "day" }, localDate(new Date(window.start), timeZone)),
    usage.map((entry) => h("td", { class: "num", "data-label": `${entry.meter} (${entry.unit})` },
      display(entry.windows[index].value)))));
  rows.reverse(); // newest day first, like the events list
  return h("div", { class: "table-scroll" },
    h("table", { class: "data usage-table" }, h("thead", {}, head), h("tbody", {}, rows)));
}
