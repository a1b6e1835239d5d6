/* Invoices: newest first, filtered by status and month, "load more" with
   next_cursor; admin and finance can run the invoice run (§7) from here. */

import * as api from "../api.js";
import { field, h, messageLine, showMessage, table, timeElement, whileBusy } from "../dom.js";
import { showApiError } from "../field-errors.js";
import { invoiceTitle, money, periodText, statusBadge } from "../format.js";

const WRITERS = ["admin", "finance"];
const STATUSES = ["draft", "pending_approval", "issued", "paid", "void"];

export function render(main, { role, query }) {
  const status = messageLine();
  const { table: list, body } = table(["Invoice", "Customer", "Status", "Period", ["Total", "num"],
    ["Amount due", "num wide-only"], ["Created", "wide-only"]], "invoices");
  const more = h("button", { type: "button", class: "secondary more", hidden: true }, "Load more");
  const statusSelect = h("select", { name: "status" }, h("option", { value: "" }, "All statuses"),
    STATUSES.map((name) => h("option", { value: name, selected: query.get("status") === name }, name.replace("_", " "))));
  const period = h("input", { type: "month", name: "period", value: query.get("period") || null });
  const customerInput = h("input", { name: "customer_id", type: "number", min: 1, inputmode: "numeric",
    placeholder: "all", value: query.get("customer_id") || null });
  const filter = h("form", { class: "form-inline", id: "invoices-filter" },
    field("Status", statusSelect), field("Month", period), field("Customer ID", customerInput),
    h("button", { type: "submit" }, "Apply"));
  let filters = { status: query.get("status") || "", period: query.get("period") || "",
    customer_id: query.get("customer_id") || "" };
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
        body.append(h("tr", {}, h("td", { colspan: 7, class: "empty" }, "No invoices match.")));
      }
      cursor = page.next_cursor;
      more.hidden = !cursor;
      showMessage(status, "");
    } catch (error) {
      if (mine === generation) showApiError(status, "Could not load invoices", error);
    }
  }

  filter.addEventListener("submit", (event) => {
    event.preventDefault();
    filters = { status: statusSelect.value, period: period.value, customer_id: customerInput.value.trim() };
    load(true);
  });
  more.addEventListener("click", () => load(false));
  main.append(
    h("div", { class: "page-head" }, h("h1", {}, "Invoices"),
      WRITERS.includes(role) ? runControl(() => load(true)) : null),
    h("section", { class: "card" }, filter),
    h("section", { class: "card" }, status, list, more));
  load(true);
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
    h("td", { class: "status" }, statusBadge(invoice.status), invoice.overdue ? statusBadge("overdue") : null),
    h("td", { class: "period" }, periodText(invoice)),
    h("td", { class: "num money total" }, money(invoice.total, invoice.currency)),
    h("td", { class: "num money wide-only" }, money(invoice.amount_due, invoice.currency)),
    h("td", { class: "wide-only time" }, timeElement(invoice.created_at)));
}
