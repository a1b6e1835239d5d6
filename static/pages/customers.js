/* Customers: the list (paged with next_cursor) and a create form. */

import * as api from "../api.js";
import { display, field, formValues, h, messageLine, showMessage, table, timeElement, whileBusy } from "../dom.js";

const WRITERS = ["admin", "finance"];

export function render(main, { role }) {
  const status = messageLine();
  const { table: list, body } = table([["ID", "num"], "Name", "E-mail", ["Timezone", "wide-only"], "Currency", ["Created", "wide-only"]], "customers");
  const more = h("button", { type: "button", class: "secondary more", hidden: true }, "Load more");
  let cursor = null;

  async function load(reset) {
    try {
      const page = await api.get("/v1/customers", { cursor: reset ? null : cursor });
      if (reset) body.replaceChildren();
      for (const customer of page.data) body.append(row(customer));
      if (reset && page.data.length === 0) {
        body.append(h("tr", {}, h("td", { colspan: 6, class: "empty" }, "No customers yet.")));
      }
      cursor = page.next_cursor;
      more.hidden = !cursor;
      showMessage(status, "");
    } catch (error) {
      showMessage(status, `Could not load customers: ${error.message}`, "error");
    }
  }

  more.addEventListener("click", () => load(false));
  main.append(
    h("div", { class: "page-head" }, h("h1", {}, "Customers")),
    ...(WRITERS.includes(role) ? [createForm(() => load(true))] : []), // (Node.append prints a null as "null")
    h("section", { class: "card" }, status, list, more));
  load(true);
}

function row(customer) {
  const link = h("a", { href: `#/customers/${customer.id}` }, display(customer.name));
  return h("tr", { "data-id": customer.id },
    h("td", { class: "num" }, customer.id),
    h("td", { class: "name" }, link, customer.archived ? h("span", { class: "badge" }, "archived") : null),
    h("td", {}, display(customer.email)),
    h("td", { class: "wide-only" }, display(customer.timezone)),
    h("td", {}, display(customer.currency)),
    h("td", { class: "wide-only" }, timeElement(customer.created_at)));
}

function createForm(onCreated) {
  const message = messageLine();
  const form = h("form", { class: "form-grid", id: "create-customer" },
    field("Name", h("input", { name: "name", required: true, maxlength: 500 })),
    field("E-mail", h("input", { name: "email", type: "email", required: true })),
    field("Timezone", h("input", { name: "timezone", value: "UTC", placeholder: "Europe/Berlin", list: "timezones" })),
    field("Currency", h("input", { name: "currency", value: "USD", maxlength: 3 })),
    h("datalist", { id: "timezones" }, Intl.supportedValuesOf("timeZone").map((zone) => h("option", { value: zone }))),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Create customer")));

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const values = formValues(form);
    const body = { name: values.name, email: values.email };
    if (values.timezone) body.timezone = values.timezone;
    if (values.currency) body.currency = values.currency.toUpperCase();
    whileBusy(form, async () => {
      try {
        const created = await api.post("/v1/customers", body);
        showMessage(message, `Created customer “${created.name}” (#${created.id}).`, "ok");
        form.reset();
        onCreated();
      } catch (error) {
        showMessage(message, `Could not create the customer: ${error.message}`, "error");
      }
    });
  });

  return h("details", { class: "card create" },
    h("summary", {}, "New customer"), form, message);
}
