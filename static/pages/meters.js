/* Meters: the list, and a create form for admins. */

import * as api from "../api.js";
import { display, field, formValues, h, messageLine, showMessage, table, whileBusy } from "../dom.js";

const AGGREGATIONS = ["sum", "count", "max", "min", "avg", "unique_count", "latest"];

export function render(main, { role }) {
  const status = messageLine();
  const { table: list, body } = table(["Key", "Name", "Unit", "Aggregation", "Value property", ["Filter", "wide-only"], ["Group by", "wide-only"]], "meters");
  const more = h("button", { type: "button", class: "secondary more", hidden: true }, "Load more");
  let cursor = null;

  async function load(reset) {
    try {
      const page = await api.get("/v1/meters", { cursor: reset ? null : cursor });
      if (reset) body.replaceChildren();
      for (const meter of page.data) body.append(row(meter));
      if (reset && page.data.length === 0) {
        body.append(h("tr", {}, h("td", { colspan: 7, class: "empty" }, "No meters yet.")));
      }
      cursor = page.next_cursor;
      more.hidden = !cursor;
      showMessage(status, "");
    } catch (error) {
      showMessage(status, `Could not load meters: ${error.message}`, "error");
    }
  }

  more.addEventListener("click", () => load(false));
  main.append(
    h("div", { class: "page-head" }, h("h1", {}, "Meters")),
    ...(role === "admin" ? [createForm(() => load(true))] : []), // (Node.append prints a null as "null")
    h("section", { class: "card" }, status, list, more));
  load(true);
}

function row(meter) {
  return h("tr", { "data-key": meter.key },
    h("td", {}, h("code", {}, meter.key)),
    h("td", {}, display(meter.name)),
    h("td", {}, display(meter.unit)),
    h("td", {}, display(meter.aggregation)),
    h("td", {}, display(meter.value_property)),
    h("td", { class: "wide-only" }, display(meter.filter)),
    h("td", { class: "wide-only" }, meter.group_by && meter.group_by.length ? meter.group_by.join(", ") : "—"));
}

function createForm(onCreated) {
  const message = messageLine();
  const aggregation = h("select", { name: "aggregation", required: true },
    AGGREGATIONS.map((name) => h("option", { value: name }, name)));
  const form = h("form", { class: "form-grid", id: "create-meter" },
    field("Key", h("input", { name: "key", required: true, pattern: "[A-Za-z][A-Za-z0-9_.\\-]{0,63}", placeholder: "api_calls" })),
    field("Name", h("input", { name: "name", required: true, placeholder: "API calls" })),
    field("Unit", h("input", { name: "unit", placeholder: "unit" })),
    field("Aggregation", aggregation),
    field("Value property", h("input", { name: "value_property", placeholder: "optional, e.g. bytes" })),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Create meter")));

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const values = formValues(form);
    const body = { key: values.key, name: values.name, aggregation: values.aggregation };
    if (values.unit) body.unit = values.unit;
    if (values.value_property) body.value_property = values.value_property;
    whileBusy(form, async () => {
      try {
        const created = await api.post("/v1/meters", body);
        showMessage(message, `Created meter “${created.key}”.`, "ok");
        form.reset();
        onCreated();
      } catch (error) {
        showMessage(message, `Could not create the meter: ${error.message}`, "error");
      }
    });
  });

  return h("details", { class: "card create" }, h("summary", {}, "New meter"), form, message);
}
