/* One invoice: header (status, customer, period, currency, dates), the lines
   with the tier breakdown under usage lines, and the totals. A draft is
   re-rated by the server when read, so this always shows current amounts. */

import * as api from "../api.js";
import { append, display, h, messageLine, showMessage, timeElement } from "../dom.js";
import { invoiceTitle, money, periodText, statusBadge } from "../format.js";
import { invoiceDetail } from "../invoice-lines.js";

export function render(main, { params }) {
  const invoiceId = params[0];
  const status = messageLine();
  const heading = h("h1", {}, `Invoice #${invoiceId}`);
  const badges = h("span", { class: "badges" });
  const header = h("dl", { class: "fields invoice-header" });
  const content = h("section", { class: "card invoice-lines", hidden: true });
  main.append(
    h("div", { class: "page-head" }, h("a", { href: "#/invoices", class: "back" }, "← Invoices"), heading, badges),
    status,
    h("section", { class: "card" }, header),
    content);

  load();

  async function load() {
    try {
      const invoice = await api.get(`/v1/invoices/${invoiceId}`);
      const [customer, meters] = await Promise.all([
        api.get(`/v1/customers/${invoice.customer_id}`).catch(() => null), // a nicety: the name and timezone
        api.get("/v1/meters", { limit: 1000 }).catch(() => ({ data: [] }))]);
      const title = invoiceTitle(invoice);
      heading.textContent = title;
      document.title = `${title} · Meterline`;
      badges.replaceChildren();
      append(badges, [statusBadge(invoice.status), invoice.overdue ? statusBadge("overdue") : null]);
      header.replaceChildren(...headerRows(invoice, customer));
      const units = new Map(meters.data.map((meter) => [meter.key, meter.unit]));
      content.replaceChildren(h("h2", {}, "Lines"), invoiceDetail(invoice, units));
      content.hidden = false;
    } catch (error) {
      showMessage(status, `Could not load the invoice: ${error.message}`, "error");
    }
  }
}

function headerRows(invoice, customer) {
  const customerLink = h("a", { href: `#/customers/${invoice.customer_id}` },
    customer ? customer.name : `#${invoice.customer_id}`);
  const rows = [
    ["Status", invoice.status.replace(/_/g, " ")],
    ["Number", invoice.number || "assigned at issue"],
    ["Customer", customerLink],
    ["Period", periodText(invoice, customer ? customer.timezone : "UTC")],
    ["Period start", timeElement(invoice.period_start)],
    ["Period end", timeElement(invoice.period_end)],
    ["Currency", invoice.currency],
    ["Payment", invoice.payment_status ? invoice.payment_status.replace(/_/g, " ") : null],
    ["Total", money(invoice.total, invoice.currency)],
    ["Amount due", money(invoice.amount_due, invoice.currency)],
    ["Issued", timeElement(invoice.issued_at)],
    ["Due", timeElement(invoice.due_at)],
  ];
  return rows.map(([label, value]) => h("div", { "data-key": label.toLowerCase().replace(/ /g, "-") },
    h("dt", {}, label), h("dd", {}, value instanceof Node ? value : display(value))));
}
