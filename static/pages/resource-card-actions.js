/* What can be done to resources: create one, start a session on one, stop a
   session, edit or delete one. The forms report in their own message lines;
   the card (resource-card.js) shows what changed. */

import * as api from "../api.js";
import { field, formValues, h, messageLine, showMessage, whileBusy } from "../dom.js";
import { clearErrors, markErrors, showApiError } from "../field-errors.js";
import { clockText, money } from "../format.js";

// -- the fields of a resource -------------------------------------------------------

/** The body of a resource form: numbers as numbers when they look like one (the server names bad fields). */
function resourceBody(values, { partial }) {
  const body = {};
  const integer = (text) => (/^\d+$/.test(text) ? Number(text) : text);
  if (!partial || values.name !== undefined) body.name = values.name;
  if (values.description !== undefined) body.description = values.description || null;
  if (values.capacity !== undefined) body.capacity = integer(values.capacity);
  if (values.price_per_minute !== undefined) body.price_per_minute = values.price_per_minute;
  if (values.currency !== undefined) body.currency = values.currency.toUpperCase();
  if (values.max_duration_minutes !== undefined) {
    body.max_duration_minutes = values.max_duration_minutes ? integer(values.max_duration_minutes) : null;
  }
  return body;
}

function resourceFields(resource = null) {
  const value = (name, fallback = null) => (resource ? resource[name] ?? "" : fallback);
  return [
    field("Name", h("input", { name: "name", required: true, maxlength: 200, "data-field": "name", value: value("name") })),
    field("Capacity", h("input", { name: "capacity", type: "number", min: 1, step: 1, required: true, inputmode: "numeric",
      "data-field": "capacity", value: value("capacity", "1") })),
    field("Price per minute", h("input", { name: "price_per_minute", required: true, inputmode: "decimal",
      placeholder: "0.50", "data-field": "price_per_minute", value: value("price_per_minute") })),
    resource ? null : field("Currency", h("input", { name: "currency", value: "USD", maxlength: 3, "data-field": "currency" })),
    field("Max minutes", h("input", { name: "max_duration_minutes", type: "number", min: 1, step: 1,
      inputmode: "numeric", placeholder: "no limit", title: "Longer sessions stop on their own.",
      "data-field": "max_duration_minutes", value: value("max_duration_minutes") })),
    field("Description", h("input", { name: "description", maxlength: 2000, "data-field": "description",
      value: value("description") })),
  ];
}

// -- the create form ----------------------------------------------------------------

export function createForm(onCreated) {
  const message = messageLine();
  const form = h("form", { class: "form-grid", id: "create-resource" }, resourceFields(),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Create resource")));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    clearErrors(form);
    const body = resourceBody(formValues(form), { partial: false });
    whileBusy(form, async () => {
      try {
        const created = await api.post("/v1/resources", body);
        showMessage(message, `Created resource “${created.name}” (#${created.id}).`, "ok");
        form.reset();
        onCreated();
      } catch (error) {
        markErrors(form, error.details);
        showApiError(message, "Could not create the resource", error);
      }
    });
  });
  return h("details", { class: "card create", id: "new-resource" }, h("summary", {}, "New resource"), form, message);
}

// -- one resource's actions ------------------------------------------------------------
// `card`: { id, context, current: () => the resource as shown, onSaved(resource), message }

/** Stop a running session; the card's message line says how it went. */
export async function stopSession(session, button, card) {
  const { id, context, message } = card;
  button.disabled = true;
  try {
    const stopped = await api.post(`/v1/sessions/${session.id}/stop`, {});
    showMessage(message, `Stopped session #${stopped.id} after ${clockText(stopped.duration_seconds)}, `
      + `billed ${money(stopped.cost, stopped.currency)}.`, "ok");
  } catch (error) {
    showApiError(message, `Could not stop session #${session.id}`, error);
    button.disabled = false;
  }
  context.refresh(id);
}

/** The start-a-session form: customers in the resource's currency, an optional user. */
export function startSessionForm(card) {
  const { id, context, current } = card;
  const line = messageLine();
  const customer = h("select", { name: "customer_id", required: true, "data-field": "customer_id" });
  const user = h("input", { name: "user", maxlength: 200, placeholder: "optional", "data-field": "user" });
  const button = h("button", { type: "submit" }, "Start session");
  const form = h("form", { class: "start-session form-inline" },
    field("Customer", customer), field("User", user), button);
  let shownCurrency = null;
  let shownCount = -1;

  form.sync = () => {
    const resource = current();
    const choices = context.customersIn(resource.currency);
    if (shownCurrency === resource.currency && shownCount === choices.length) return;
    const chosen = customer.value;
    shownCurrency = resource.currency;
    shownCount = choices.length;
    customer.replaceChildren(...(choices.length
      ? choices.map((item) => h("option", { value: item.id, selected: String(item.id) === chosen }, `${item.name} (#${item.id})`))
      : [h("option", { value: "" }, `No ${resource.currency} customer`)]));
    customer.disabled = choices.length === 0;
    button.disabled = choices.length === 0;
  };

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    clearErrors(form);
    delete line.dataset.code;
    const values = formValues(form);
    const body = { resource_id: id, customer_id: Number(values.customer_id) };
    if (values.user) body.user = values.user;
    whileBusy(form, async () => {
      try {
        const session = await api.post("/v1/sessions", body);
        showMessage(line, `Started session #${session.id} for ${context.nameOf(session.customer_id) || `customer #${session.customer_id}`}.`, "ok");
        user.value = "";
      } catch (error) {
        if (error.code === "capacity_full") {
          // The server's own words: "Room A is full: 2 of 2 in use."
          showMessage(line, `Not started. ${error.message} Stop a session first.`, "error");
          line.dataset.code = error.code;
        } else {
          markErrors(form, error.details);
          showApiError(line, "Could not start the session", error);
        }
      }
      context.refresh(id);
    }).finally(() => { form.sync(); if (shownCount === 0) button.disabled = true; });
  });
  form.sync();
  const box = h("div", { class: "start" }, form, line);
  box.sync = form.sync;
  box.seatFreed = () => { // "Room A is full" no longer holds once a seat is free
    if (line.dataset.code === "capacity_full") {
      showMessage(line, "");
      delete line.dataset.code;
    }
  };
  return box;
}

/** "Edit or delete": the resource's fields as they are when opened; delete after a confirm. */
export function editForm(card) {
  const { id, context, current, onSaved } = card;
  const line = messageLine();
  const form = h("form", { class: "form-grid edit-resource" });
  const confirmBox = h("div", { class: "confirm-delete", hidden: true },
    h("p", {}, "Delete this resource? Its past sessions stay as billing records."),
    h("div", { class: "actions" },
      h("button", { type: "button", class: "danger confirm" }, "Delete"),
      h("button", { type: "button", class: "secondary cancel" }, "Cancel")));
  const askDelete = h("button", { type: "button", class: "secondary delete" }, "Delete resource…");
  const details = h("details", { class: "edit" }, h("summary", {}, "Edit or delete"), form,
    h("div", { class: "danger-row" }, askDelete, confirmBox), line);

  function fill() {
    form.replaceChildren(...resourceFields(current()).filter(Boolean),
      h("div", { class: "actions" }, h("button", { type: "submit" }, "Save changes")));
  }
  details.addEventListener("toggle", () => {
    if (details.open) {
      fill(); // the current values, read when opened (an open form keeps what is typed)
      showMessage(line, "");
      confirmBox.hidden = true;
      askDelete.hidden = false;
    }
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    clearErrors(form);
    const body = resourceBody(formValues(form), { partial: true });
    whileBusy(form, async () => {
      try {
        const saved = await api.request("PATCH", `/v1/resources/${id}`, body);
        onSaved(saved);
        showMessage(line, `Saved “${saved.name}”.`, "ok");
      } catch (error) {
        markErrors(form, error.details);
        showApiError(line, "Could not save", error);
      }
    });
  });
  askDelete.addEventListener("click", () => {
    confirmBox.hidden = false;
    askDelete.hidden = true;
  });
  confirmBox.querySelector(".cancel").addEventListener("click", () => {
    confirmBox.hidden = true;
    askDelete.hidden = false;
  });
  confirmBox.querySelector(".confirm").addEventListener("click", async (event) => {
    const button = event.currentTarget;
    button.disabled = true;
    try {
      await api.del(`/v1/resources/${id}`);
      context.removed(id);
    } catch (error) {
      // e.g. 409: "Resource 3 has 2 active sessions; stop them first."
      showApiError(line, "Could not delete", error);
      line.dataset.code = error.code;
      confirmBox.hidden = true;
      askDelete.hidden = false;
    } finally {
      button.disabled = false;
    }
  });
  return details;
}
