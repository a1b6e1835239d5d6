/* An invoice-shaped answer (invoice, upcoming invoice, estimate) as a lines
   table, with the tier breakdown under each usage line, and its totals. */

import { display, h } from "./dom.js";
import { money } from "./format.js";

/** The lines and the totals of `invoice`. `units` maps meter key → unit. */
export function invoiceDetail(invoice, units = new Map()) {
  return h("div", { class: "invoice-detail" }, linesTable(invoice, units), totalsList(invoice));
}

export function linesTable(invoice, units = new Map()) {
  const body = h("tbody");
  for (const line of invoice.lines || []) {
    body.append(lineRow(line, units));
    if (line.tiers && line.tiers.length) body.append(tierRow(line, units));
  }
  if (!(invoice.lines || []).length) {
    body.append(h("tr", {}, h("td", { colspan: 4, class: "empty" }, "No lines.")));
  }
  const head = h("thead", {}, h("tr", {},
    h("th", { scope: "col" }, "Description"), h("th", { scope: "col", class: "num" }, "Quantity"),
    h("th", { scope: "col", class: "num" }, "Unit price"),
    h("th", { scope: "col", class: "num" }, `Amount (${invoice.currency})`)));
  return h("div", { class: "table-scroll" }, h("table", { class: "data lines" }, head, body));
}

function quantityText(line, units) {
  if (line.quantity === null || line.quantity === undefined) return "—";
  if (line.type === "base_fee") {
    // The quantity is the days billed; a whole period reads better as such.
    return line.amount === line.unit_price ? "full month" : `${line.quantity} day${Number(line.quantity) === 1 ? "" : "s"}`;
  }
  const unit = line.meter ? units.get(line.meter) : null;
  return unit ? `${line.quantity} ${unit}` : String(line.quantity);
}

const blank = (value) => (value === null || value === undefined ? " blank" : "");

function lineRow(line, units) {
  return h("tr", { class: `line line-${line.type}`, "data-type": line.type, "data-meter": line.meter },
    h("td", { class: "description" }, display(line.description),
      line.meter ? h("code", { class: "muted" }, ` ${line.meter}`) : null),
    h("td", { class: `num quantity${blank(line.quantity)}` }, quantityText(line, units)),
    h("td", { class: `num unit-price${blank(line.unit_price)}` }, display(line.unit_price)),
    h("td", { class: "num amount" }, display(line.amount)));
}

/** "0 – 10000", "10000 – ∞": the billable units a tier covers (from exclusive). */
function tierRange(tier) {
  return `${display(tier.from)} – ${tier.to === null || tier.to === undefined ? "∞" : tier.to}`;
}

function tierRow(line, units) {
  const unit = units.get(line.meter);
  const rows = line.tiers.map((tier, index) => h("tr", { "data-tier": index },
    h("td", {}, tierRange(tier)),
    h("td", { class: "num" }, display(tier.quantity)),
    h("td", { class: "num" }, display(tier.unit_price)),
    h("td", { class: "num" }, display(tier.flat_fee)),
    h("td", { class: "num" }, display(tier.amount))));
  const table = h("table", { class: "tiers-breakdown", "aria-label": `Tier breakdown of ${line.description}` },
    h("thead", {}, h("tr", {},
      h("th", { scope: "col", title: "Billable units the tier covers (from exclusive, to inclusive)" },
        unit ? `Tier (${unit})` : "Tier"),
      h("th", { scope: "col", class: "num" }, "Units"), h("th", { scope: "col", class: "num" }, "Unit price"),
      h("th", { scope: "col", class: "num" }, "Flat fee"),
      h("th", { scope: "col", class: "num", title: "Exact, before the line is rounded once" }, "Amount"))),
    h("tbody", {}, rows));
  return h("tr", { class: "line-tiers", "data-meter": line.meter },
    h("td", { colspan: 4 }, h("div", { class: "table-scroll" }, table)));
}

const TOTALS = [
  ["subtotal", "Subtotal"], ["discount", "Discount"], ["tax", "Tax"], ["total", "Total"],
  ["credits_applied", "Credits applied"], ["amount_due", "Amount due"],
];

export function totalsList(invoice) {
  const rows = TOTALS.map(([key, label]) => {
    let value = invoice[key];
    // discount and credits are positive fields that are taken off
    if ((key === "discount" || key === "credits_applied") && value && !/^0(\.0*)?$/.test(value)) value = `−${value}`;
    return h("div", { class: `total-${key}`, "data-key": key },
      h("dt", {}, label), h("dd", {}, money(value, invoice.currency)));
  });
  return h("dl", { class: "totals" }, rows);
}
