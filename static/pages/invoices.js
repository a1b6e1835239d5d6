/* Invoices: newest first, filtered by status, customer, month and overdue —
   the filters live in the hash query (#/invoices?status=issued&overdue=true),
   so a reload or a shared link keeps them — "load more" with next_cursor, a
   CSV export of the same filters, and (admin, finance) the invoice run (§7). */

import * as api from "../api.js";
import { field, h, messageLine, showMessage, table, timeElement, whileBusy } from "../dom.js";
import { downloadButton } from "../download.js";
import { showApiError } from "../field-errors.js";
import { invoiceBadges, invoiceTitle, money, periodText } from "../format.js";

const WRITERS = ["admin", "finance"];
const STATUSES = ["draft", "pending_approval", "issued", "paid", "void"];
const FILTERS = ["status", "customer_id", "period", "overdue"];
const COLUMNS = 8;

/** The filters of a hash query, as the list's query parameters. */
function filtersOf(query) {
  const filters = {};
  for (const name of FILTERS) filters[name] = (query.get(name) || "").trim();
  if (filters.overdue !== "true") filters.overdue = "";
  return filters;
}

function hashOf(filters) {
  const params = new URLSearchParams();
  for (const name of FILTERS) if (filters[name]) params.set(name, filters[name]);
  const text = params.toString();
  return text ? `#/invoices?${text}` : "#/invoices";
}

export function render(main, { role, query }) {
  const filters = filtersOf(query);
  const status = messageLine();
  const { table: list, body } = table(["Invoice", "Customer", "Status", "Period", ["Total", "num"],
    ["Amount due", "num"], ["Paid", "num wide-only"], ["Created", "wide-only"]], "invoices");
  const more = h("button", { type: "button", class: "secondary more", hidden: true }, "Load more");
  const statusSelect = h("select", { name: "status" }, h("option", { value: "" }, "All statuses"),
    STATUSES.map((name) => h("option", { value: name, selected: filters.status === name }, name.replace(/_/g, " "))));
  const customerSelect = h("select", { name: "customer_id" }, customerOptions([], filters.customer_id));
  const period = h("input", { type: "month", name: "period", value: filters.period || null });
  const overdue = h("input", { type: "checkbox", name: "overdue", value: "true", checked: filters.overdue === "true" });
  const filter = h("form", { class: "form-inline", id: "invoices-filter" },
    field("Status", statusSelect), field("Customer", customerSelect), field("Month", period),
    h("label", { class: "check" }, overdue, "Overdue only"),
    h("button", { type: "submit" }, "Apply"),
    filtersActive(filters) ? h("a", { href: "#/invoices", class: "clear-filters" }, "Clear filters") : null);
  const exportLine = messageLine();
  const csv = downloadButton("Download CSV",
    () => ["/v1/invoices.csv", filters, "invoices.csv"], exportLine, { id: "invoices-csv" });
  let cursor = null;
  let generation = 0;
  const names = new Map();

  function nameOf(customerId) {
    if (!names.has(customerId)) {
      names.set(customerId, api.get(`/v1/customers/${customerId}`).then((customer) => customer.name, () => null));
    }
    return names.get(customerId);
  }

  async function load(reset) {
    const mine = ++generation;
    try {
      const page = await api.get("/v1/invoices", { ...filters, cursor: reset ? null : cursor });
      if (mine !== generation) return;
      if (reset) body.replaceChildren();
      for (const invoice of page.data) body.append(row(invoice, nameOf));
      if (reset && page.data.length === 0) {
        body.append(h("tr", {}, h("td", { colspan: COLUMNS, class: "empty" }, "No invoices match.")));
      }
      cursor = page.next_cursor;
      more.hidden = !cursor;
      showMessage(status, "");
    } catch (error) {
      if (mine === generation) showApiError(status, "Could not load invoices", error);
    }
  }

  async function loadCustomers() {
    try {
      const page = await api.get("/v1/customers", { limit: 1000 });
      for (const customer of page.data) {
        if (!names.has(customer.id)) names.set(customer.id, Promise.resolve(customer.name));
      }
      customerSelect.replaceChildren(...customerOptions(page.data, filters.customer_id));
    } catch {
      // the select keeps "All customers" and the filtered id; the list says what failed
    }
  }

  filter.addEventListener("submit", (event) => {
    event.preventDefault();
    const chosen = { status: statusSelect.value, customer_id: customerSelect.value, period: period.value,
      overdue: overdue.checked ? "true" : "" };
    const target = hashOf(chosen);
    if (location.hash === target) load(true); // same filters: the hash does not change, so reload here
    else location.hash = target; // the router renders the page again with the new query
  });
  more.addEventListener("click", () => load(false));
  main.append(
    h("div", { class: "page-head" }, h("h1", {}, "Invoices"),
      WRITERS.includes(role) ? runControl(() => load(true)) : null),
    h("section", { class: "card" }, filter),
    h("section", { class: "card" },
      csv ? h("div", { class: "section-head list-tools" },
        h("p", { class: "muted" }, filtersActive(filters) ? "Filtered list." : "All invoices, newest first."),
        h("div", { class: "actions" }, csv)) : null,
      exportLine, status, list, more));
  loadCustomers();
  load(true);
}

function filtersActive(filters) {
  return FILTERS.some((name) => filters[name]);
}

function customerOptions(customers, selected) {
  const options = [h("option", { value: "" }, "All customers")];
  for (const customer of customers) {
    options.push(h("option", { value: customer.id, selected: String(customer.id) === selected },
      `${customer.name} (#${customer.id})`));
  }
  if (selected && !customers.some((customer) => String(customer.id) === selected)) {
    options.push(h("option", { value: selected, selected: true }, `Customer #${selected}`));
  }
  return options;
}

function runControl(onDone) {
  const message = messageLine();
  const button = h("button", { type: "submit", id: "run-invoices" }, "Run invoices now");
  const form = h("form", { class: "run-invoices" }, button,
    h("small", { class: "hint" }, "Drafts an invoice for every subscription period that has ended."));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    showMessage(message, "Running…", "info");
    whileBusy(form, async () => {
      try {
        const reply = await api.post("/v1/invoices/run", {});
        showMessage(message, reply.created
          ? `Created ${reply.created} draft invoice${reply.created === 1 ? "" : "s"}.`
          : "No invoice was due: every ended period already has one.", "ok");
        onDone();
      } catch (error) {
        showApiError(message, "The invoice run failed", error);
      }
    });
  });
  return h("div", { class: "page-actions" }, form, message);
}

function row(invoice, nameOf) {
  const customer = h("a", { href: `#/customers/${invoice.customer_id}` }, `#${invoice.customer_id}`);
  nameOf(invoice.customer_id).then((name) => { if (name) customer.textContent = name; });
  return h("tr", { "data-id": invoice.id, "data-status": invoice.status },
    h("td", { class: "invoice" }, h("a", { href: `#/invoices/${invoice.id}` }, invoiceTitle(invoice))),
    h("td", { class: "customer" }, customer),
    h("td", { class: "status" }, invoiceBadges(invoice)),
    h("td", { class: "period" }, periodText(invoice)),
    h("td", { class: "num money total" }, money(invoice.total, invoice.currency)),
    h("td", { class: "num money due", title: "Amount due (after credits)" }, money(invoice.amount_due, invoice.currency)),
    h("td", { class: "num money paid wide-only" }, money(invoice.amount_paid, invoice.currency)),
    h("td", { class: "wide-only time" }, timeElement(invoice.created_at)));
}
