/* The form that creates an alert rule (POST /v1/alerts, admin and finance):
   a spend rule watches the upcoming invoice's subtotal (a money threshold in
   the customer's currency, or in a named currency for every customer of it),
   a usage rule a meter's value in the open period. The server validates;
   its errors are shown on the fields they name (field-errors.js). */

import * as api from "./api.js";
import { field, h, messageLine, showMessage, whileBusy } from "./dom.js";
import { clearControl, clearErrors, markErrors, showApiError } from "./field-errors.js";
import { jsonNumber } from "./format.js";

const CUSTOMER_CHOICES = 1000;

export function ruleForm(onCreated) {
  const message = messageLine();
  const name = h("input", { name: "name", maxlength: 200, placeholder: "optional, e.g. Big USD spend", "data-field": "name" });
  const type = h("select", { name: "type", "data-field": "type" },
    h("option", { value: "spend" }, "Spend"), h("option", { value: "usage" }, "Usage"));
  const customer = h("select", { name: "customer_id", "data-field": "customer_id" },
    h("option", { value: "" }, "Every customer"));
  const customerId = h("input", { name: "customer_id_typed", type: "number", min: 1, step: 1, hidden: true,
    placeholder: "a customer id; empty: every customer" });
  const meter = h("select", { name: "meter", "data-field": "meter" }, h("option", { value: "" }, "Loading meters…"));
  const currency = h("input", { name: "currency", maxlength: 3, placeholder: "USD", autocapitalize: "characters",
    "data-field": "currency" });
  const threshold = h("input", { name: "threshold", inputmode: "decimal", placeholder: "500.00", "data-field": "threshold" });
  const currencyNote = h("small", { class: "hint currency-note" });
  const thresholdHint = h("small", { class: "hint" });
  const meterField = field("Meter", meter);
  const currencyField = h("label", { class: "field" }, h("span", { class: "field-label" }, "Currency"), currency,
    h("small", { class: "hint" }, "Every customer billed in it."));
  const customers = new Map(); // id → { name, currency }

  const form = h("form", { class: "form-grid rule-form", id: "create-alert", novalidate: true },
    field("Name", name), field("Type", type),
    h("label", { class: "field" }, h("span", { class: "field-label" }, "Customer"), customer, customerId, currencyNote),
    meterField, currencyField,
    h("label", { class: "field" }, h("span", { class: "field-label threshold-label" }, "Threshold"), threshold, thresholdHint),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Create rule")));

  /** A number input for the customer's id instead of the list (errors on customer_id go to it). */
  function typeTheId() {
    customer.hidden = true;
    customer.removeAttribute("data-field");
    customerId.hidden = false;
    customerId.dataset.field = "customer_id";
  }

  function chosenCustomer() {
    const raw = customerId.hidden ? customer.value : customerId.value.trim();
    return raw === "" ? null : raw;
  }

  /** Show the controls the chosen type and customer need. */
  function sync() {
    const spend = type.value === "spend";
    const chosen = chosenCustomer();
    const own = chosen !== null ? customers.get(Number(chosen)) : null;
    meterField.hidden = spend;
    currencyField.hidden = !spend || chosen !== null;
    currencyNote.textContent = spend && own ? `Spend in ${own.name}’s currency, ${own.currency}.` : "";
    const label = form.querySelector(".threshold-label");
    if (spend) {
      const unit = own ? own.currency : currency.value.trim().toUpperCase();
      label.textContent = unit ? `Threshold (${unit})` : "Threshold";
      threshold.placeholder = "500.00";
      thresholdHint.textContent = "Fires once a period when the upcoming invoice’s subtotal reaches it.";
    } else {
      const option = meter.selectedOptions[0];
      const unit = option && option.dataset.unit;
      label.textContent = unit ? `Threshold (${unit})` : "Threshold";
      threshold.placeholder = "1000000";
      thresholdHint.textContent = "Fires once a period when the meter’s value reaches it.";
    }
  }

  api.get("/v1/customers", { limit: CUSTOMER_CHOICES }).then((page) => {
    for (const item of page.data) customers.set(item.id, { name: item.name, currency: item.currency });
    customer.append(...page.data.filter((item) => !item.archived).map((item) =>
      h("option", { value: item.id }, `${item.name} (#${item.id}, ${item.currency})`)));
    if (page.next_cursor) typeTheId(); // too many to list
    sync();
  }).catch((error) => {
    typeTheId();
    showMessage(message, `Could not list the customers (${error.message}): type a customer's id instead.`, "error");
  });
  api.get("/v1/meters", { limit: 1000 }).then((page) => {
    meter.replaceChildren(h("option", { value: "" }, page.data.length ? "Choose a meter" : "No meters yet"),
      ...page.data.map((item) => h("option", { value: item.key, "data-unit": item.unit || "" },
        `${item.name || item.key} (${item.key})`)));
    sync();
  }).catch((error) => {
    meter.replaceChildren(h("option", { value: "" }, "Meters unavailable"));
    showMessage(message, `Could not load the meters: ${error.message}`, "error");
  });

  for (const control of [name, type, customer, customerId, meter, currency, threshold]) {
    control.addEventListener("input", () => clearControl(control));
    control.addEventListener("change", sync);
  }
  currency.addEventListener("input", sync);

  function body() {
    const values = { type: type.value };
    const ruleName = name.value.trim();
    if (ruleName) values.name = ruleName;
    const chosen = chosenCustomer();
    if (chosen !== null) values.customer_id = /^\d+$/.test(chosen) ? Number(chosen) : chosen;
    const amount = threshold.value.trim();
    if (type.value === "spend") {
      const code = currency.value.trim().toUpperCase();
      if (chosen === null && code) values.currency = code;
      if (amount) values.threshold = amount; // money stays a string
    } else {
      if (meter.value) values.meter = meter.value;
      if (amount) values.threshold = jsonNumber(amount); // an exact JSON number
    }
    return values;
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    clearErrors(form, "submit");
    showMessage(message, "");
    whileBusy(form, async () => {
      try {
        const created = await api.post("/v1/alerts", body());
        const title = created.name ? `“${created.name}”` : `#${created.id}`;
        showMessage(message, `Created the alert rule ${title}. It is evaluated with the next run of the scheduler.`, "ok");
        form.reset();
        sync();
        onCreated(created);
      } catch (error) {
        markErrors(form, error.details, "submit");
        showApiError(message, "Could not create the alert rule", error);
      }
    });
  });
  sync();
  return h("details", { class: "card create", id: "new-alert" },
    h("summary", {}, "New alert rule"), form, message);
}
