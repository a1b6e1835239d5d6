/* One invoice in the customer portal: its status, period, dates, lines and
   totals, and its PDF. No staff actions, no internal history. */

import * as api from "../api.js";
import { display, h, messageLine, showMessage } from "../dom.js";
import { downloadButton } from "../download.js";
import { invoiceBadges, invoiceTitle, localDate, money, periodText } from "../format.js";
import { invoiceDetail } from "../invoice-lines.js";
import { HOME, metersByKey } from "./portal.js";

export function render(main, { params }) {
  const invoiceId = params[0];
  const status = messageLine();
  const heading = h("h1", {}, `Invoice #${invoiceId}`);
  const badges = h("span", { class: "badges" });
  const outcome = messageLine();
  const pdf = downloadButton("Download PDF", () => [`/v1/invoices/${invoiceId}.pdf`, null, `${heading.textContent}.pdf`],
    outcome, { id: "download-pdf" });
  const summary = h("dl", { class: "fields compact invoice-summary" });
  const lines = h("div", { class: "invoice-lines" });
  main.append(
    h("div", { class: "page-head" }, h("a", { href: HOME, class: "back" }, "← Your account"), heading, badges),
    status,
    h("section", { class: "card" }, h("div", { class: "section-head" }, h("h2", {}, "Summary"), pdf), outcome, summary),
    h("section", { class: "card" }, h("h2", {}, "Lines"), lines));

  let gone = false;
  Promise.all([api.get(`/v1/invoices/${invoiceId}`), metersByKey()]).then(([invoice, meters]) => {
    if (gone) return;
    const title = invoiceTitle(invoice);
    heading.textContent = title;
    document.title = `${title} · Meterline`;
    badges.replaceChildren(...invoiceBadges(invoice));
    const zone = invoice.timezone || "UTC";
    const day = (instant) => (instant ? localDate(new Date(instant), zone) : null);
    summary.replaceChildren(...[
      ["Period", periodText(invoice, zone)], ["Issued", day(invoice.issued_at)], ["Due", day(invoice.due_at)],
      ["Total", money(invoice.total, invoice.currency)], ["Amount due", money(invoice.amount_due, invoice.currency)],
      ["Paid", money(invoice.amount_paid, invoice.currency)],
    ].map(([label, value]) => h("div", { "data-key": label.toLowerCase().replace(/ /g, "-") },
      h("dt", {}, label), h("dd", {}, display(value)))));
    const units = new Map([...meters].map(([key, meter]) => [key, meter.unit]));
    lines.replaceChildren(invoiceDetail(invoice, units));
  }).catch((error) => showMessage(status, `Could not load the invoice: ${error.message}`, "error"));
  return () => { gone = true; };
}
