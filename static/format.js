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

/** The number of fraction digits of a money string the server sent ("0.00" → 2, "12" → 0). */
export function digitsOf(amount) {
  const match = /\.(\d+)$/.exec(String(amount ?? ""));
  return match ? match[1].length : 0;
}

/** The minor-unit digits of a currency by the browser's own table (USD 2, JPY 0, KWD 3). */
export function currencyDigits(currency) {
  try {
    return new Intl.NumberFormat("en", { style: "currency", currency }).resolvedOptions().maximumFractionDigits;
  } catch {
    return 2;
  }
}

/**
 * seconds / 60 × price per minute, rounded half-up once to `digits` fraction
 * digits, as a decimal string — the rule the server bills by (§6), done in
 * exact integer arithmetic (BigInt), never binary floating point. For display
 * between two reads of the server's `cost_so_far`.
 */
export function costOf(seconds, pricePerMinute, digits) {
  const text = String(pricePerMinute).trim();
  const match = /^(-?)(\d+)(?:\.(\d+))?$/.exec(text);
  if (!match || !Number.isInteger(seconds) || seconds < 0) return null;
  const [, sign, whole, fraction = ""] = match;
  const numerator = BigInt(whole + fraction) * BigInt(seconds) * 10n ** BigInt(digits);
  const denominator = 60n * 10n ** BigInt(fraction.length);
  const minor = (2n * numerator + denominator) / (2n * denominator); // half-up (away from zero)
  const padded = minor.toString().padStart(digits + 1, "0");
  const body = digits ? `${padded.slice(0, -digits)}.${padded.slice(-digits)}` : padded;
  return minor !== 0n && sign ? `-${body}` : body;
}

/** Whole seconds as "h:mm:ss" ("0:04:05", "27:00:00"). */
export function clockText(seconds) {
  const total = Math.max(0, Math.floor(seconds));
  const hours = Math.floor(total / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  const rest = total % 60;
  return `${hours}:${String(minutes).padStart(2, "0")}:${String(rest).padStart(2, "0")}`;
}

const BYTE_UNITS = ["kB", "MB", "GB", "TB", "PB", "EB"];

/**
 * A byte count for people, in decimal units like the GB-days storage is billed
 * in (1 GB = 10⁹ bytes): "512 bytes", "1.23 MB", "12.3 GB". The exact count
 * belongs in a title beside it.
 */
export function byteSize(bytes) {
  const count = Number(bytes);
  if (!Number.isFinite(count)) return "—";
  if (Math.abs(count) < 1000) return `${count} byte${count === 1 ? "" : "s"}`;
  let value = count;
  let unit = -1;
  while (Math.abs(value) >= 1000 && unit < BYTE_UNITS.length - 1) {
    value /= 1000;
    unit += 1;
  }
  const digits = Math.abs(value) < 10 ? 2 : Math.abs(value) < 100 ? 1 : 0;
  return `${Number(value.toFixed(digits))} ${BYTE_UNITS[unit]}`;
}

/** A decimal string as [digits as a BigInt, fraction digits], or null. */
function exactDecimal(text) {
  const match = /^(-?)(\d+)(?:\.(\d+))?$/.exec(String(text ?? "").trim());
  if (!match) return null;
  const [, sign, whole, fraction = ""] = match;
  return [BigInt(`${sign}${whole}${fraction}`), fraction.length];
}

/**
 * `part` as a percentage of `whole` (both decimal strings, e.g. money), to one
 * decimal place rounded down, computed on the exact decimals; null when either
 * is not a number or `whole` is not above zero. For display (bars, "40%").
 */
export function percentOf(part, whole) {
  const a = exactDecimal(part);
  const b = exactDecimal(whole);
  if (!a || !b || b[0] <= 0n) return null;
  const digits = Math.max(a[1], b[1]);
  const numerator = a[0] * 10n ** BigInt(digits - a[1]);
  const denominator = b[0] * 10n ** BigInt(digits - b[1]);
  return Number((numerator * 1000n) / denominator) / 10;
}

/** `minor` (a BigInt of the smallest units) with `digits` fraction digits: 12345n, 2 → "123.45". */
function decimalText(minor, digits) {
  const negative = minor < 0n;
  const padded = (negative ? -minor : minor).toString().padStart(digits + 1, "0");
  const body = digits ? `${padded.slice(0, -digits)}.${padded.slice(-digits)}` : padded;
  return negative ? `-${body}` : body;
}

/**
 * The exact sum of decimal strings of one currency (["188.10", "49.00"] →
 * "237.10"), with the most fraction digits among them; "0" for none and null
 * when one is not a decimal. Never add amounts of different currencies.
 */
export function sumMoney(amounts) {
  const parsed = [...amounts].map(exactDecimal);
  if (parsed.some((entry) => entry === null)) return null;
  const digits = Math.max(0, ...parsed.map(([, fraction]) => fraction));
  const total = parsed.reduce((sum, [value, fraction]) => sum + value * 10n ** BigInt(digits - fraction), 0n);
  return decimalText(total, digits);
}

/** Compare two decimal strings exactly, like a sort comparator (< 0 when a < b); a non-decimal sorts last. */
export function compareMoney(a, b) {
  const x = exactDecimal(a);
  const y = exactDecimal(b);
  if (!x || !y) return (x ? -1 : 0) + (y ? 1 : 0);
  const digits = Math.max(x[1], y[1]);
  const difference = x[0] * 10n ** BigInt(digits - x[1]) - y[0] * 10n ** BigInt(digits - y[1]);
  return difference < 0n ? -1 : difference > 0n ? 1 : 0;
}
