/* Plans: the list, and the plan editor with its live what-if estimate
   (creating a plan takes admin or finance; anyone who reads plans may try
   one out). */

import * as api from "../api.js";
import { display, h, messageLine, showMessage, table, whileBusy } from "../dom.js";
import { hasErrors, markErrors, showApiError } from "../field-errors.js";
import { money } from "../format.js";
import { planEditor } from "../plan-editor.js";
import { whatIf } from "../what-if.js";

const WRITERS = ["admin", "finance"];

export function render(main, { role }) {
  const canWrite = WRITERS.includes(role);
  const status = messageLine();
  const { table: list, body } = table(["Code", "Name", ["Currency", "wide-only"], ["Base fee", "num"],
    ["Commitment", "wide-only num"], ["Trial", "wide-only num"], "Charges"], "plans");
  const more = h("button", { type: "button", class: "secondary more", hidden: true }, "Load more");
  const workbench = h("div", { class: "workbench-slot" });
  let cursor = null;
  let panel = null;
  let highlight = null; // code of a plan just created

  async function load(reset) {
    try {
      const page = await api.get("/v1/plans", { cursor: reset ? null : cursor });
      if (reset) body.replaceChildren();
      for (const plan of page.data) body.append(row(plan, plan.code === highlight, copy));
      if (reset && page.data.length === 0) {
        body.append(h("tr", {}, h("td", { colspan: 7, class: "empty" }, "No plans yet.")));
      }
      cursor = page.next_cursor;
      more.hidden = !cursor;
      showMessage(status, "");
    } catch (error) {
      showMessage(status, `Could not load plans: ${error.message}`, "error");
    }
  }

  function copy(plan) {
    if (!panel) return;
    panel.details.open = true;
    panel.editor.load(plan);
    panel.details.scrollIntoView({ block: "start" });
  }

  more.addEventListener("click", () => load(false));
  main.append(
    h("div", { class: "page-head" }, h("h1", {}, "Plans")),
    workbench,
    h("section", { class: "card" }, status, list, more));
  load(true);

  api.get("/v1/meters", { limit: 1000 }).then((meters) => {
    panel = workbenchPanel(meters.data, canWrite, (created) => {
      highlight = created.code;
      load(true);
    });
    workbench.append(panel.details);
  }).catch((error) => showMessage(status, `Could not load meters for the plan editor: ${error.message}`, "error"));

  return () => panel && panel.estimate.stop();
}

function chargeSummary(charge) {
  const parts = [];
  if (charge.model === "per_unit") parts.push(`${charge.unit_price} per unit`);
  else if (charge.model === "package") parts.push(`${charge.package_price} per ${charge.package_size}`);
  else parts.push(`${charge.model}, ${charge.tiers.length} tier${charge.tiers.length === 1 ? "" : "s"}`);
  if (charge.free_units) parts.push(`${charge.free_units} free`);
  if (charge.free_units_per_day) parts.push(`${charge.free_units_per_day} free per day`);
  if (charge.minimum_charge) parts.push(`minimum ${charge.minimum_charge}`);
  return h("li", {}, h("code", {}, charge.meter), `: ${parts.join(", ")}`);
}

function row(plan, isNew, copy) {
  const charges = plan.charges || [];
  const copyButton = h("button", { type: "button", class: "secondary small copy-plan" }, "Use as template");
  copyButton.addEventListener("click", () => copy(plan));
  return h("tr", { "data-code": plan.code, class: isNew ? "new" : null },
    h("td", {}, h("code", {}, plan.code)),
    h("td", { class: "name" }, h("span", {}, display(plan.name)), h("div", {}, copyButton)),
    h("td", { class: "wide-only" }, display(plan.currency)),
    h("td", { class: "num money" }, money(plan.base_fee, plan.currency)),
    h("td", { class: "num wide-only" }, display(plan.minimum_commitment)),
    h("td", { class: "num wide-only" }, plan.trial_days ? `${plan.trial_days} days` : "—"),
    h("td", { class: "charges-summary" }, charges.length ? h("ul", { class: "plain" }, charges.map(chargeSummary)) : "—"));
}

/** The editor and the what-if panel in a <details>; creates plans for writers. */
function workbenchPanel(meters, canWrite, onCreated) {
  const message = messageLine();
  const grid = h("div", { class: "workbench" });
  let estimate = null;
  const editor = planEditor({ meters, onChange: () => estimate && estimate.schedule() });
  estimate = whatIf({ meters, editor, errorRoot: grid });
  const submit = h("button", { type: "submit" }, "Create plan");
  if (canWrite) editor.form.append(h("div", { class: "actions" }, submit), message);
  grid.append(editor.form, estimate.element);

  // Once every field the last submit refused has been edited, its error list is out of date.
  editor.form.addEventListener("input", () => {
    if (message.classList.contains("error") && !hasErrors(grid, "submit")) showMessage(message, "");
  });
  editor.form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (!canWrite) return;
    whileBusy(editor.form, async () => {
      try {
        const created = await api.post("/v1/plans", editor.plan());
        markErrors(grid, [], "submit");
        showMessage(message, `Created plan “${created.name}” (${created.code}).`, "ok");
        editor.reset();
        estimate.schedule();
        onCreated(created);
      } catch (error) {
        markErrors(grid, error.details, "submit");
        showApiError(message, "Could not create the plan", error);
      }
    });
  });

  const details = h("details", { class: "card create", id: "plan-workbench" },
    h("summary", {}, canWrite ? "New plan" : "Try a plan (what-if)"), grid);
  details.addEventListener("toggle", () => { if (details.open) estimate.schedule(); });
  return { details, editor, estimate };
}
