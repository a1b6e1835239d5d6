/* The live what-if estimate beside the plan editor: a usage input per charged
   meter; after each edit (debounced) POST /v1/estimate with the plan being
   edited, inline, and show the priced lines, tier breakdown and totals. A
   plan the server refuses shows its errors, on the fields they name. */

import * as api from "./api.js";
import { field, h, messageLine, showMessage } from "./dom.js";
import { clearControl, markErrors, showApiError } from "./field-errors.js";
import { jsonNumber, money } from "./format.js";
import { invoiceDetail } from "./invoice-lines.js";

const DEBOUNCE_MS = 350;

/** `errorRoot` holds the editor and this panel: where field errors are marked. */
export function whatIf({ meters, editor, errorRoot }) {
  const byKey = new Map(meters.map((meter) => [meter.key, meter]));
  const units = new Map(meters.map((meter) => [meter.key, meter.unit]));
  const usageBox = h("div", { class: "form-grid usage-inputs" });
  const status = messageLine();
  const result = h("div", { class: "estimate-result" });
  const element = h("section", { class: "what-if", id: "what-if", "aria-labelledby": "what-if-title" },
    h("h3", { id: "what-if-title" }, "What-if estimate"),
    h("p", { class: "muted" }, "Usage for one full month; the estimate follows every change to the plan."),
    usageBox, status, result);
  const inputs = new Map(); // meter key → input, kept while its charge comes and goes
  let timer = null;
  let generation = 0;

  function usageInput(key) {
    if (!inputs.has(key)) {
      const input = h("input", { type: "text", inputmode: "decimal", placeholder: "0", autocomplete: "off",
        name: `usage-${key}`, "data-field": `usage.${key}`, "data-meter": key });
      input.addEventListener("input", () => {
        clearControl(input);
        schedule();
      });
      inputs.set(key, input);
    }
    return inputs.get(key);
  }

  function syncUsage() {
    const keys = editor.chargedMeters();
    const current = [...usageBox.querySelectorAll("input")].map((input) => input.dataset.meter);
    if (current.join("\n") === keys.join("\n")) return; // keep focus while typing
    usageBox.replaceChildren(...keys.map((key) => {
      const meter = byKey.get(key);
      const label = meter ? `${meter.name} (${meter.unit})` : key;
      return field(label, usageInput(key));
    }));
    if (!keys.length) usageBox.append(h("p", { class: "muted" }, "Add a charge to enter its usage."));
  }

  async function run() {
    const mine = ++generation;
    const usage = {};
    for (const key of editor.chargedMeters()) {
      const value = usageInput(key).value.trim();
      if (value) usage[key] = jsonNumber(value);
    }
    try {
      const estimate = await api.post("/v1/estimate", { plan: editor.plan({ estimate: true }), usage });
      if (mine !== generation) return;
      markErrors(errorRoot, [], "estimate");
      showMessage(status, "");
      result.replaceChildren(
        h("p", { class: "estimate-total" }, "Estimated total ", h("strong", { id: "estimate-total" },
          money(estimate.total, estimate.currency))),
        invoiceDetail(estimate, units));
    } catch (error) {
      if (mine !== generation) return;
      result.replaceChildren();
      if (error.status === 400 && error.details && error.details.length) {
        markErrors(errorRoot, error.details, "estimate");
        showApiError(status, "The plan is not complete yet", error);
      } else {
        showMessage(status, `Could not estimate: ${error.message}`, "error");
      }
    }
  }

  function schedule() {
    syncUsage();
    clearTimeout(timer);
    timer = setTimeout(run, DEBOUNCE_MS);
  }

  syncUsage();
  return { element, schedule, stop: () => { clearTimeout(timer); generation += 1; } };
}
