/* Display helpers for billing values (money with its currency, the local days
   of a billing period, invoice titles) and exact numbers typed into forms. */

import { h } from "./dom.js";

/** "171.00 USD"; money stays the server's exact decimal string. */
export function money(value, currency) {
  if (value === null || value === undefined || value === "") return "—";
  return currency ? `${value} ${currency}` : String(value);
}

/** YYYY-MM-DD of `date` in `timeZone` (the en-CA format is ISO-like). */
export function localDate(date, timeZone = "UTC") {
  return new Intl.DateTimeFormat("en-CA", { timeZone, year: "numeric", month: "2-digit", day: "2-digit" }).format(date);
}

export function addDays(isoDate, days) {
  const [year, month, day] = isoDate.split("-").map(Number);
  return new Date(Date.UTC(year, month - 1, day + days)).toISOString().slice(0, 10);
}

/** The local days a half-open period covers: "2025-09-01 – 2025-09-30".
    Invoices carry `local_period`; estimates only the UTC instants. */
export function periodText(invoice, timeZone = "UTC") {
  if (invoice.local_period && invoice.local_period.start) {
    return `${invoice.local_period.start} – ${addDays(invoice.local_period.end, -1)}`;
  }
  if (!invoice.period_start || !invoice.period_end) return "—";
  const first = localDate(new Date(invoice.period_start), timeZone);
  const last = localDate(new Date(Date.parse(invoice.period_end) - 1), timeZone);
  return `${first} – ${last}`;
}

/** "INV-000012", or "Draft #7" before a number is assigned at issue. */
export function invoiceTitle(invoice) {
  if (invoice.number) return invoice.number;
  return invoice.status === "draft" ? `Draft #${invoice.id}` : `Invoice #${invoice.id}`;
}

/** A status word as a coloured badge ("pending_approval" reads "pending approval"). */
export function statusBadge(status) {
  const known = /^[a-z_]+$/.test(String(status)) ? status : "unknown";
  return h("span", { class: `badge status status-${known}`, "data-status": status }, String(status).replace(/_/g, " "));
}

/** Every badge an invoice deserves: its status, then "on hold" (a rejected
    draft), "partially paid" and "overdue" where they apply. */
export function invoiceBadges(invoice) {
  const badges = [statusBadge(invoice.status)];
  if (invoice.on_hold) badges.push(statusBadge("on_hold"));
  if (invoice.payment_status === "partially_paid" && invoice.status !== "void") {
    badges.push(statusBadge("partially_paid"));
  }
  if (invoice.overdue) badges.push(statusBadge("overdue"));
  return badges;
}

/** Whether a money string is zero ("0.00", "0", "-0.000"). */
export function isZero(value) {
  return /^-?0*(\.0*)?$/.test(String(value ?? "").trim());
}

const JSON_NUMBER = /^-?(0|[1-9]\d*)(\.\d+)?$/;

/**
 * A quantity typed into a form, for a JSON body. Quantities are JSON numbers
 * the server reads exactly, so a well-formed decimal is sent as its own digits
 * (JSON.rawJSON) rather than through a binary double; anything else goes as
 * typed, and the server's validation error names the field.
 */
export function jsonNumber(text) {
  const value = String(text).trim();
  if (JSON_NUMBER.test(value)) {
    return typeof JSON.rawJSON === "function" ? JSON.rawJSON(value) : Number(value);
  }
  const number = Number(value);
  return value !== "" && Number.isFinite(number) ? number : value;
}
