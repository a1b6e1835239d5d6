/* Overview (§10, §11): the staff home. The KPIs of /v1/analytics/overview
   (reloaded every 30 s; active sessions follow the live stream's `stats`),
   revenue per month over the last 12 months with a chart per currency,
   events per day over the last 30 days, the open alerts (this month's
   firings, the newest few, live) and the top customers by revenue.

   Money is always per currency: amounts of different currencies are never
   added, compared or drawn on one axis, and each is shown as the server's
   exact string with its code (JPY has no decimals, KWD three). Months and
   days are those of the browser's timezone, which the page names. */

import * as api from "../api.js";
import { chart, meterBar } from "../charts.js";
import { h, messageLine, showMessage } from "../dom.js";
import { showApiError } from "../field-errors.js";
import { browserZone, coalesce, customerNames, localTime, typeBadge } from "../alert-list.js";
import { byteSize, compareMoney, digitsOf, localDate, percentOf, sumMoney } from "../format.js";
import * as live from "../live.js";

/** Who may open this page (the server answers 403 to others): every staff role, for whom it is home. */
export const ROLES = ["admin", "finance", "customer_success", "sales", "viewer"];
export const HOME = "#/overview";
const REFRESH_MS = 30_000;
const TOP = 5;
const OPEN_ALERTS = 8;
const whole = new Intl.NumberFormat("en");

// [field of the overview, label, kind, where to read more, what an empty amount means]
const KPIS = [
  ["revenue_this_month", "Revenue this month", "money", "#/invoices", "Nothing issued yet"],
  ["outstanding", "Outstanding", "money", "#/invoices?status=issued", "Nothing due"],
  ["overdue", "Overdue", "money", "#/invoices?overdue=true", "Nothing overdue"],
  ["customers", "Customers", "count", "#/customers"],
  ["active_subscriptions", "Active subscriptions", "count", "#/customers"],
  ["events_today", "Events today", "count", "#/events"],
  ["active_sessions", "Active sessions", "count", "#/resources"],
  ["stored_bytes", "Stored data", "bytes", "#/storage"],
  ["alerts_this_month", "Alerts this month", "count", "#/alerts"],
];

function isZoneError(error) {
  return error.status === 400 && (error.details || []).some((detail) => detail.field === "timezone");
}

export function render(main) {
  document.title = "Overview · Meterline";
  let zone = browserZone();
  const zoneNote = h("p", { class: "muted overview-zone", id: "overview-zone" });
  const updated = h("span", { class: "muted overview-updated", id: "overview-updated" });
  const kpiStatus = messageLine();
  const kpis = h("section", { class: "kpis", id: "kpis", "aria-label": "Key figures" },
    KPIS.map(([key, label, , href]) => h("a", { class: "kpi card", "data-kpi": key, href },
      h("span", { class: "kpi-label" }, label), h("span", { class: "kpi-value muted" }, "…"))));
  const revenue = section("revenue", "Revenue per month",
    "Issued and paid invoices by the month they were issued, over the last 12 months; drafts and void invoices are not revenue.");
  const events = section("events-per-day", "Events per day", "Events received over the last 30 days, all customers and meters.");
  const top = section("top-customers", "Top customers by revenue", "Over the last 12 months, per currency.");
  const alerts = section("open-alerts", "Open alerts", "What fired this month, newest first.",
    h("a", { href: "#/alerts", class: "all-alerts" }, "All alerts →"));
  main.append(
    h("div", { class: "page-head overview-head" }, h("h1", {}, "Overview"), zoneNote, updated),
    kpiStatus, kpis, revenue.element,
    h("div", { class: "overview-grid" }, events.element,
      h("div", { class: "overview-side" }, alerts.element, top.element)));

  let gone = false;
  const drawn = { revenue: null, events: null }; // the answers, to draw again at a new width
  const names = new Map();
  const alertNames = customerNames();
  let alertsThisMonth = null;

  function showZone(fallbackFrom) {
    zoneNote.replaceChildren("Months and days in ", h("strong", {}, zone),
      fallbackFrom ? ` (the server does not know this browser’s timezone, ${fallbackFrom})` : " (this browser’s timezone)", ".");
  }

  async function loadKpis() {
    try {
      let figures;
      try {
        figures = await api.get("/v1/analytics/overview", { timezone: zone });
      } catch (error) {
        if (!isZoneError(error) || zone === "UTC") throw error;
        const unknown = zone;
        zone = "UTC";
        showZone(unknown);
        figures = await api.get("/v1/analytics/overview", { timezone: zone });
      }
      if (gone) return;
      for (const [key, , kind, , none] of KPIS) showKpi(kpis.querySelector(`[data-kpi=${key}]`), figures[key] ?? 0, kind, none);
      alertsThisMonth = figures.alerts_this_month ?? null;
      updated.textContent = `Updated ${new Date().toLocaleTimeString()}`;
      showMessage(kpiStatus, "");
    } catch (error) {
      if (!gone) showApiError(kpiStatus, "Could not load the key figures", error);
    }
  }

  async function loadCharts() {
    const [revenueAnswer, eventsAnswer] = await Promise.allSettled([
      api.get("/v1/analytics/revenue", { interval: "month", group_by: "customer", timezone: zone }),
      api.get("/v1/analytics/events", { interval: "day", timezone: zone }),
    ]);
    if (gone) return;
    if (revenueAnswer.status === "fulfilled") {
      drawn.revenue = revenueAnswer.value;
      drawRevenue(revenue.body, revenueAnswer.value, zone);
      drawTop(top.body, revenueAnswer.value, nameOf);
    } else {
      showApiError(revenue.status, "Could not load revenue", revenueAnswer.reason);
      showApiError(top.status, "Could not load revenue", revenueAnswer.reason);
    }
    if (eventsAnswer.status === "fulfilled") {
      drawn.events = eventsAnswer.value;
      drawEvents(events.body, eventsAnswer.value, zone);
    } else {
      showApiError(events.status, "Could not load events", eventsAnswer.reason);
    }
  }

  /** This month's firings in the overview's timezone (the browser's, or UTC when the server does not know it). */
  async function loadAlerts() {
    const mine = (Number(alerts.body.dataset.loads) || 0) + 1;
    alerts.body.dataset.loads = String(mine);
    try {
      const page = await api.get("/v1/alerts/events", { from: monthStart(zone).toISOString(), limit: OPEN_ALERTS });
      if (gone || alerts.body.dataset.loads !== String(mine)) return;
      drawAlerts(alerts.body, page, alertNames, alertsThisMonth);
      showMessage(alerts.status, "");
    } catch (error) {
      if (!gone) showApiError(alerts.status, "Could not load the alerts", error);
    }
  }

  function nameOf(customerId) {
    if (!names.has(customerId)) {
      names.set(customerId, api.get(`/v1/customers/${customerId}`).then((customer) => customer.name, () => null));
    }
    return names.get(customerId);
  }

  // Charts are drawn at their box's width (text keeps its size): draw them again when it changes.
  let width = main.clientWidth;
  let resizeTimer = null;
  function onResize() {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => {
      if (gone || main.clientWidth === width) return;
      width = main.clientWidth;
      if (drawn.revenue) drawRevenue(revenue.body, drawn.revenue, zone);
      if (drawn.events) drawEvents(events.body, drawn.events, zone);
    }, 200);
  }
  window.addEventListener("resize", onResize);

  showZone(null);
  // The key figures first: they settle the timezone the charts then use.
  loadKpis().then(() => {
    if (gone) return;
    loadCharts();
    loadAlerts();
  });
  const timer = setInterval(() => {
    if (!document.hidden) loadKpis().then(() => { if (!gone) loadAlerts(); });
  }, REFRESH_MS);
  const onFiring = coalesce(() => loadKpis().then(() => (gone ? null : loadAlerts())));
  const stopAlerts = live.subscribe("alert.triggered", onFiring);
  const stopPolling = live.fallback(onFiring);
  const stopStats = live.subscribe("stats", (stats) => {
    if (stats && Number.isInteger(stats.active_sessions)) {
      showKpi(kpis.querySelector("[data-kpi=active_sessions]"), stats.active_sessions, "count");
    }
  });
  return () => {
    gone = true;
    clearInterval(timer);
    clearTimeout(resizeTimer);
    window.removeEventListener("resize", onResize);
    stopStats();
    stopAlerts();
    stopPolling();
  };
}

/** A card with a heading (and `aside` beside it), a note under it, a message line and a body to fill. */
function section(id, title, note, aside = null) {
  const status = messageLine();
  const body = h("div", { class: "section-body" }, h("p", { class: "muted loading" }, "Loading…"));
  const element = h("section", { class: "card overview-section", id },
    h("div", { class: "section-head" }, h("h2", {}, title), aside), h("p", { class: "muted section-note" }, note), status, body);
  return { element, status, body };
}

// -- key figures -----------------------------------------------------------------

function showKpi(card, value, kind, none) {
  const slot = card.querySelector(".kpi-value");
  let shown;
  if (kind === "money") {
    const entries = Object.entries(value || {});
    shown = entries.length
      ? h("ul", { class: "kpi-value kpi-money plain" }, entries.map(([currency, amount]) =>
        h("li", { "data-currency": currency, "data-amount": amount },
          h("span", { class: "amount" }, amount), " ", h("span", { class: "currency" }, currency))))
      : h("span", { class: "kpi-value kpi-none" }, none);
  } else if (kind === "bytes") {
    shown = h("span", { class: "kpi-value", "data-value": value, title: `${whole.format(value)} bytes` }, byteSize(value));
  } else {
    shown = h("span", { class: "kpi-value", "data-value": value }, whole.format(value));
  }
  slot.replaceWith(shown);
}

// -- revenue per month, one chart per currency -------------------------------------

function monthLabel(start, zone) {
  return new Intl.DateTimeFormat("en", { timeZone: zone, month: "short", year: "numeric" }).format(new Date(start));
}

/** The width a chart gets inside `box` (its content box), or a fallback before it is laid out. */
function innerWidth(box, fallback = 640) {
  const style = getComputedStyle(box);
  const width = box.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
  return width > 0 ? width : fallback;
}

function drawRevenue(body, answer, zone) {
  const currencies = Object.keys(answer.totals || {});
  if (!currencies.length) {
    body.replaceChildren(h("p", { class: "empty", id: "no-revenue" },
      "No revenue in the last 12 months yet. Invoices count here once they are issued."));
    return;
  }
  const grid = h("div", { class: "revenue-charts" });
  body.replaceChildren(grid);
  // Every figure goes in before any is measured: each chart is drawn at its own column's width.
  const figures = currencies.map((currency) => {
    const total = answer.totals[currency];
    const zero = digitsOf(total) ? `0.${"0".repeat(digitsOf(total))}` : "0";
    const months = answer.data.map((bucket) => ({
      month: localDate(new Date(bucket.start), zone).slice(0, 7), label: monthLabel(bucket.start, zone),
      amount: (bucket.totals || {})[currency] ?? zero,
    }));
    const figure = h("figure", { class: "revenue-currency", "data-currency": currency },
      h("figcaption", {}, h("h3", {}, currency),
        h("span", { class: "revenue-total", "data-amount": total }, `${total} ${currency}`,
          h("span", { class: "muted" }, " in 12 months"))));
    grid.append(figure);
    return [figure, currency, months];
  });
  for (const [figure, currency, months] of figures) {
    const points = months.map((m) => ({ label: m.label, value: m.amount, data: { month: m.month, amount: m.amount, currency } }));
    figure.append(chart(points, { kind: "bar", unit: currency, width: innerWidth(figure), title: `Revenue per month in ${currency}` }),
      monthTable(months, currency));
  }
}

/** The months' exact amounts, folded away under the chart (the newest first). */
function monthTable(months, currency) {
  const rows = [...months].reverse().map((m) => h("tr", { "data-month": m.month },
    h("td", {}, m.label), h("td", { class: "num" }, `${m.amount} ${currency}`)));
  return h("details", { class: "month-table" }, h("summary", {}, "Amounts per month"),
    h("table", { class: "data compact" }, h("tbody", {}, rows)));
}

// -- events per day ----------------------------------------------------------------

function dayLabel(start, zone) {
  return new Intl.DateTimeFormat("en", { timeZone: zone, month: "short", day: "numeric" }).format(new Date(start));
}

function drawEvents(body, answer, zone) {
  const total = h("p", { class: "events-total", id: "events-total", "data-total": answer.total },
    h("strong", {}, whole.format(answer.total)), ` event${answer.total === 1 ? "" : "s"} in the last ${answer.data.length} days`);
  if (!answer.total) {
    body.replaceChildren(h("p", { class: "empty", id: "no-events" },
      `No events in the last ${answer.data.length} days. Events sent to the API appear here by the day they happened.`));
    return;
  }
  body.replaceChildren(total);
  const points = answer.data.map((bucket) => ({
    label: dayLabel(bucket.start, zone), value: bucket.count,
    data: { day: localDate(new Date(bucket.start), zone), count: bucket.count },
  }));
  body.append(chart(points, { kind: "bar", unit: "events", width: innerWidth(body), title: "Events per day" }));
}

// -- top customers -----------------------------------------------------------------

/** {currency: [{ customerId, amount }]}: each customer's revenue over the range, largest first. */
function rankCustomers(answer, top = TOP) {
  const amounts = new Map(); // currency → Map(customer id → [amounts])
  for (const bucket of answer.data || []) {
    for (const group of bucket.groups || []) {
      const customerId = group.group && group.group.customer_id;
      if (customerId === undefined || customerId === null) continue;
      for (const [currency, amount] of Object.entries(group.totals || {})) {
        if (!amounts.has(currency)) amounts.set(currency, new Map());
        const byCustomer = amounts.get(currency);
        if (!byCustomer.has(customerId)) byCustomer.set(customerId, []);
        byCustomer.get(customerId).push(amount);
      }
    }
  }
  const ranked = {};
  for (const [currency, byCustomer] of amounts) {
    ranked[currency] = [...byCustomer].map(([customerId, list]) => ({ customerId, amount: sumMoney(list) }))
      .sort((a, b) => compareMoney(b.amount, a.amount) || a.customerId - b.customerId)
      .slice(0, top);
  }
  return ranked;
}

function drawTop(body, answer, nameOf) {
  const ranked = rankCustomers(answer);
  const currencies = Object.keys(ranked).sort();
  if (!currencies.length) {
    body.replaceChildren(h("p", { class: "empty", id: "no-top-customers" },
      "No customer has an issued invoice in the last 12 months yet."));
    return;
  }
  body.replaceChildren(...currencies.map((currency) => {
    const total = (answer.totals || {})[currency];
    return h("div", { class: "top-currency", "data-currency": currency },
      h("h3", {}, currency),
      h("ol", { class: "top-list" }, ranked[currency].map((entry) => topRow(entry, currency, total, nameOf))));
  }));
}

function topRow({ customerId, amount }, currency, total, nameOf) {
  const link = h("a", { href: `#/customers/${customerId}`, class: "name" }, `Customer #${customerId}`);
  nameOf(customerId).then((name) => { if (name !== null) link.textContent = name; });
  const percent = percentOf(amount, total);
  const share = percent === null ? null : meterBar(percent, 100, `${percent}% of the ${currency} revenue`);
  if (share) share.classList.add("share-bar");
  return h("li", { "data-customer-id": customerId, "data-amount": amount },
    h("div", { class: "top-line" }, link,
      h("span", { class: "amount" }, `${amount} ${currency}`)),
    share ? h("div", { class: "share" }, share, h("span", { class: "muted share-text" }, `${percent}%`)) : null);
}

// -- open alerts -------------------------------------------------------------------

/** The first instant of the current month in `zone`: the browser's own timezone, or UTC. */
function monthStart(zone) {
  const now = new Date();
  if (zone === "UTC") return new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1));
  return new Date(now.getFullYear(), now.getMonth(), 1);
}

function drawAlerts(body, page, names, total) {
  if (!page.data.length) {
    body.replaceChildren(h("p", { class: "empty", id: "no-open-alerts" },
      "Nothing fired this month. Budget steps, alert rules, spikes and storage quotas show up here."));
    return;
  }
  const list = h("ol", { class: "open-alerts plain" }, page.data.map((firing) =>
    h("li", { "data-id": firing.id, "data-type": firing.type, "data-customer-id": firing.customer_id },
      h("div", { class: "open-alert-line" }, typeBadge(firing.type), names.link(firing.customer_id),
        h("span", { class: "muted open-alert-time" }, localTime(firing.created_at))),
      h("p", { class: "open-alert-message" }, firing.message))));
  const more = page.next_cursor
    ? h("p", { class: "muted open-alerts-more" }, total !== null ? `The latest ${page.data.length} of ${whole.format(total)} this month.`
      : `The latest ${page.data.length}.`)
    : null;
  body.replaceChildren(list);
  if (more) body.append(more);
}
