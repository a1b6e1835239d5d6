/* The customer portal (§11): what a signed-in customer user sees, and all it
   sees. The open period's invoice with the budget bar, its invoices with
   their PDFs, what its alerts fired (alert-list.js, live; the bell in the
   top bar has its notifications), its files (files.js: upload, download, delete, the quota bar)
   and its usage per meter this period as SVG charts. Everything is read with
   the tenant's own token, so the server scopes every answer to it. */

import * as api from "../api.js";
import { append, h, messageLine, showMessage, table } from "../dom.js";
import { downloadButton } from "../download.js";
import { filesPanel } from "../files.js";
import { invoiceBadges, invoiceTitle, money, periodText } from "../format.js";
import { drawMeter } from "../usage-charts.js";
import { loadUpcoming } from "./customer-billing.js";
import { customerAlertsCard } from "../alert-list.js";

export const HOME = "#/portal";
const RECENT_INVOICES = 24;

/** The customer a tenant credential belongs to. */
export function customerIdOf(me) {
  return me.customer_id ?? (me.user && me.user.customer_id) ?? null;
}

/** The meters by key (names, units, group_by), or an empty map when they cannot be read. */
export function metersByKey() {
  return api.get("/v1/meters", { limit: 1000 })
    .then((meters) => new Map(meters.data.map((meter) => [meter.key, meter])), () => new Map());
}

export function render(main, { me }) {
  const customerId = customerIdOf(me);
  const status = messageLine();
  const heading = h("h1", {}, "Your account");
  const subtitle = h("p", { class: "muted portal-subtitle" });
  const upcoming = h("section", { class: "card", id: "upcoming-invoice" });
  const invoices = h("section", { class: "card", id: "portal-invoices" });
  const alertsSlot = h("div", { class: "alerts-slot" });
  const filesSlot = h("div", { class: "files-slot" });
  const usage = h("section", { class: "portal-usage", id: "portal-usage" });
  main.append(h("div", { class: "page-head" }, heading, subtitle), status,
    h("div", { class: "portal-grid" }, upcoming, invoices), alertsSlot, filesSlot, usage);
  document.title = "Your account · Meterline";
  if (customerId === null) {
    showMessage(status, "This sign-in belongs to no customer.", "error");
    return null;
  }

  let gone = false;
  let alerts = null;
  const meters = metersByKey();
  const units = meters.then((found) => new Map([...found].map(([key, meter]) => [key, meter.unit])));

  api.get(`/v1/customers/${customerId}`).then((customer) => {
    if (gone) return;
    heading.textContent = customer.name;
    subtitle.textContent = customer.email;
    document.title = `${customer.name} · Meterline`;
    const refreshUsage = () => {
      loadUpcoming(upcoming, customer, units);
      loadUsage(usage, customer, meters);
    };
    alerts = customerAlertsCard(customer.id, { id: "portal-alerts", own: true });
    alertsSlot.replaceChildren(alerts);
    const files = filesPanel({ canWrite: true, onChange: refreshUsage });
    filesSlot.replaceChildren(files.element);
    loadInvoices(invoices, customer);
    refreshUsage();
  }).catch((error) => showMessage(status, `Could not load your account: ${error.message}`, "error"));

  return () => {
    gone = true;
    if (alerts) alerts.stop();
  };
}

/** The tenant's invoices, newest first, each with its PDF. */
async function loadInvoices(section, customer) {
  const title = "Invoices";
  const line = messageLine();
  section.replaceChildren(h("h2", {}, title), h("p", { class: "muted" }, "Loading…"));
  try {
    const page = await api.get("/v1/invoices", { customer_id: customer.id, limit: RECENT_INVOICES });
    const { table: list, body } = table(["Invoice", "Status", ["Total", "num"], ["", "row-actions"]],
      "invoices portal-invoices");
    // drafts and invoices awaiting approval are still being prepared: the tenant sees them once issued
    const shown = page.data.filter((invoice) => !["draft", "pending_approval"].includes(invoice.status));
    for (const invoice of shown) {
      const name = invoiceTitle(invoice);
      body.append(h("tr", { "data-id": invoice.id, "data-status": invoice.status },
        h("td", { class: "invoice" }, h("a", { href: `#/portal/invoices/${invoice.id}` }, name),
          h("span", { class: "invoice-period muted" }, periodText(invoice, customer.timezone))),
        h("td", { class: "status" }, invoiceBadges(invoice)),
        h("td", { class: "num money total" }, money(invoice.total, invoice.currency)),
        h("td", { class: "row-actions pdf" }, downloadButton("PDF",
          () => [`/v1/invoices/${invoice.id}.pdf`, null, `${name}.pdf`], line,
          { class: "secondary small", "data-pdf": invoice.id, "aria-label": `Download ${name} as PDF` }))));
    }
    if (!shown.length) body.append(h("tr", {}, h("td", { colspan: 4, class: "empty" }, "No invoices yet.")));
    section.replaceChildren(); // (replaceChildren would print a null as "null"; append leaves it out)
    append(section, [h("h2", {}, title), line, list,
      page.next_cursor ? h("p", { class: "muted" }, `The latest ${RECENT_INVOICES} invoices.`) : null]);
  } catch (error) {
    showMessage(line, `Could not load your invoices: ${error.message}`, "error");
    section.replaceChildren(h("h2", {}, title), line);
  }
}

const isZero = (value) => value === null || value === undefined || Number(value) === 0;

/**
 * Usage this billing period, a chart per meter by day. Meters that declare a
 * group_by (storage calls by operation) also show their value per group.
 * Meters without usage this period are left out (the catalog holds other
 * customers' meters too).
 */
async function loadUsage(section, customer, metersPromise) {
  const mine = (Number(section.dataset.loads) || 0) + 1;
  section.dataset.loads = String(mine);
  const current = () => section.dataset.loads === String(mine);
  const line = messageLine();
  if (!section.childElementCount) section.append(h("h2", {}, "Usage this period"), h("p", { class: "muted" }, "Loading…"));
  try {
    const path = `/v1/customers/${customer.id}/usage`;
    const [reply, meters] = await Promise.all([api.get(path, { window: "day" }), metersPromise]);
    const used = reply.usage.filter((entry) => !isZero(entry.value));
    const groupBy = (entry) => (meters.get(entry.meter)?.group_by || [])[0] || null;
    const groups = await Promise.all(used.map((entry) => (groupBy(entry)
      ? api.get(path, { meter: entry.meter, group_by: groupBy(entry) }).then((answer) => answer.usage[0]?.groups || null,
        () => null)
      : null)));
    if (!current()) return;
    const charts = h("div", { class: "charts portal-charts" });
    section.replaceChildren();
    append(section, [
      h("div", { class: "section-head usage-head" }, h("h2", {}, "Usage this period"),
        h("p", { class: "muted" }, periodText({ period_start: reply.from, period_end: reply.to }, customer.timezone))),
      charts,
      used.length ? null : h("p", { class: "card empty" }, "No usage yet this period.")]);
    used.forEach((entry, index) => drawMeter(charts, entry, {
      name: meters.get(entry.meter)?.name, timeZone: customer.timezone, groups: groups[index], groupBy: groupBy(entry),
    }));
  } catch (error) {
    if (!current()) return;
    showMessage(line, `Could not load your usage: ${error.message}`, "error");
    section.replaceChildren(h("h2", {}, "Usage this period"), line);
  }
}
