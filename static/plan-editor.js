/* The plan editor: the plan's fields and its charges, each charge with the
   inputs of its model (per-unit price; graduated/volume tiers; package size
   and price). It builds the §5 plan object, and every control carries in
   data-field the path the server names in a validation error
   ("charges[0].tiers[1].up_to"), so errors land on the right input. */

import { field, h } from "./dom.js";
import { clearControl } from "./field-errors.js";
import { jsonNumber } from "./format.js";

const MODELS = [["per_unit", "Per unit"], ["graduated", "Graduated tiers"], ["volume", "Volume tiers"],
  ["package", "Package"]];
const TIERED = new Set(["graduated", "volume"]);

const text = (attrs) => h("input", { type: "text", autocomplete: "off", ...attrs });

/** Put a trimmed string into `target[name]` unless it is empty. */
function put(target, name, value) {
  const trimmed = String(value).trim();
  if (trimmed) target[name] = trimmed;
}

/**
 * The editor form. `onChange()` runs after every edit (typing, adding or
 * removing a charge or tier). Returns { form, plan(options), chargedMeters(),
 * load(plan), reset() }.
 */
export function planEditor({ meters, onChange = () => {} }) {
  const inputs = {
    code: text({ name: "code", placeholder: "pro", spellcheck: "false" }),
    name: text({ name: "name", placeholder: "Pro", maxlength: 200 }),
    currency: text({ name: "currency", value: "USD", maxlength: 3, spellcheck: "false" }),
    base_fee: text({ name: "base_fee", inputmode: "decimal", placeholder: "0.00" }),
    minimum_commitment: text({ name: "minimum_commitment", inputmode: "decimal", placeholder: "none" }),
    trial_days: text({ name: "trial_days", inputmode: "numeric", placeholder: "0" }),
  };
  for (const [name, input] of Object.entries(inputs)) input.dataset.field = name;

  const charges = [];
  const chargeList = h("div", { class: "charges", "data-field": "charges" });
  const addCharge = h("button", { type: "button", class: "secondary", id: "add-charge", disabled: !meters.length },
    "Add charge");
  const form = h("form", { class: "plan-editor", id: "plan-editor", novalidate: true },
    h("div", { class: "form-grid" },
      field("Code", inputs.code), field("Name", inputs.name), field("Currency", inputs.currency),
      field("Base fee per month", inputs.base_fee), field("Minimum commitment", inputs.minimum_commitment),
      field("Trial days", inputs.trial_days)),
    h("h3", { class: "section-title" }, "Charges"),
    meters.length ? null : h("p", { class: "muted" }, "Create a meter first: every charge prices one meter."),
    chargeList,
    h("div", { class: "actions" }, addCharge));

  function renumber() {
    charges.forEach((charge, index) => charge.number(index));
  }

  function changed() {
    renumber();
    onChange();
  }

  function add(initial) {
    const charge = chargeEditor(meters, initial, {
      onRemove() {
        charges.splice(charges.indexOf(charge), 1);
        charge.element.remove();
        changed();
      },
      onChange: changed,
    });
    charges.push(charge);
    chargeList.append(charge.element);
    renumber();
    return charge;
  }

  addCharge.addEventListener("click", () => {
    // Default to a meter no other charge prices yet.
    const used = new Set(charges.map((charge) => charge.value().meter));
    const free = meters.find((meter) => !used.has(meter.key));
    const charge = add({ meter: (free || meters[0]).key, model: "per_unit" });
    charge.focus();
    changed();
  });
  form.addEventListener("input", (event) => {
    clearControl(event.target);
    onChange();
  });
  form.addEventListener("change", (event) => {
    if (event.target.tagName === "SELECT") {
      clearControl(event.target);
      onChange();
    }
  });

  function reset() {
    form.reset();
    for (const charge of charges.splice(0)) charge.element.remove();
  }

  return {
    form,
    reset,
    /** The plan object; `estimate: true` leaves out code and name (the estimate needs neither). */
    plan({ estimate = false } = {}) {
      const plan = {};
      if (!estimate) {
        plan.code = inputs.code.value.trim();
        plan.name = inputs.name.value.trim();
      }
      put(plan, "currency", inputs.currency.value.toUpperCase());
      plan.interval = "month";
      put(plan, "base_fee", inputs.base_fee.value);
      put(plan, "minimum_commitment", inputs.minimum_commitment.value);
      if (inputs.trial_days.value.trim()) plan.trial_days = jsonNumber(inputs.trial_days.value);
      plan.charges = charges.map((charge) => charge.value());
      return plan;
    },
    /** The meter keys the charges price, once each, in order. */
    chargedMeters() {
      return [...new Set(charges.map((charge) => charge.value().meter).filter(Boolean))];
    },
    /** Fill the editor from a plan (as GET /v1/plans shows it), as a template: the code stays empty. */
    load(plan) {
      reset();
      inputs.name.value = plan.name || "";
      inputs.currency.value = plan.currency || "USD";
      inputs.base_fee.value = plan.base_fee || "";
      inputs.minimum_commitment.value = plan.minimum_commitment && Number(plan.minimum_commitment) ? plan.minimum_commitment : "";
      inputs.trial_days.value = plan.trial_days ? String(plan.trial_days) : "";
      for (const charge of plan.charges || []) add(charge);
      changed();
      inputs.code.focus();
    },
  };
}

function chargeEditor(meters, initial, { onRemove, onChange }) {
  const known = meters.some((meter) => meter.key === initial.meter);
  const meter = h("select", { "data-part": "meter" },
    meters.map((item) => h("option", { value: item.key, selected: item.key === initial.meter }, `${item.name} (${item.key})`)),
    known || !initial.meter ? null : h("option", { value: initial.meter, selected: true }, initial.meter));
  const model = h("select", { "data-part": "model" },
    MODELS.map(([value, label]) => h("option", { value, selected: value === initial.model }, label)));
  const free = text({ inputmode: "decimal", placeholder: "0", "data-part": "free_units", value: initial.free_units ?? null });
  const freePerDay = text({ inputmode: "decimal", placeholder: "0", "data-part": "free_units_per_day",
    value: initial.free_units_per_day ?? null });
  const minimum = text({ inputmode: "decimal", placeholder: "none", "data-part": "minimum_charge", value: initial.minimum_charge ?? null });
  const unitPrice = text({ inputmode: "decimal", placeholder: "0.0001", "data-part": "unit_price", value: initial.unit_price ?? null });
  const packageSize = text({ inputmode: "numeric", placeholder: "1000", "data-part": "package_size", value: initial.package_size ?? null });
  const packagePrice = text({ inputmode: "decimal", placeholder: "0.01", "data-part": "package_price", value: initial.package_price ?? null });

  const tiers = [];
  const tierRows = h("div", { class: "tier-rows" });
  const addTier = h("button", { type: "button", class: "secondary small add-tier" }, "Add tier");
  const perUnit = h("div", { class: "model-inputs form-grid", "data-model": "per_unit" }, field("Unit price", unitPrice));
  const tiered = h("div", { class: "model-inputs tiers", "data-model": "tiers" },
    h("div", { class: "tier-row tier-head", "aria-hidden": "true" },
      h("span", {}, "Up to (units)"), h("span", {}, "Unit price"), h("span", {}, "Flat fee"), h("span", {})),
    tierRows,
    h("div", { class: "tier-foot" }, addTier,
      h("small", { class: "hint" }, "Tiers count billable units (after free units). Leave “up to” empty on the last tier for no limit.")));
  const pack = h("div", { class: "model-inputs form-grid", "data-model": "package" },
    field("Package size (units)", packageSize), field("Price per package", packagePrice));
  const legend = h("legend", {}, "Charge");
  const remove = h("button", { type: "button", class: "secondary small remove-charge" }, "Remove charge");
  const element = h("fieldset", { class: "charge" }, legend,
    h("div", { class: "form-grid" }, field("Meter", meter), field("Model", model), field("Free units", free),
      field("Free units per day", freePerDay), field("Minimum charge", minimum)),
    perUnit, tiered, pack, h("div", { class: "actions" }, remove));
  let index = 0;

  function addTierRow(initialTier = {}) {
    const tier = tierEditor(initialTier, () => {
      tiers.splice(tiers.indexOf(tier), 1);
      tier.element.remove();
      number(index);
      onChange();
    });
    tiers.push(tier);
    tierRows.append(tier.element);
    number(index);
    return tier;
  }

  function showModel() {
    perUnit.hidden = model.value !== "per_unit";
    tiered.hidden = !TIERED.has(model.value);
    pack.hidden = model.value !== "package";
    if (TIERED.has(model.value) && tiers.length === 0) addTierRow();
  }

  function number(position) {
    index = position;
    const base = `charges[${position}]`;
    legend.textContent = `Charge ${position + 1}`;
    element.dataset.field = base;
    for (const [input, name] of [[meter, "meter"], [model, "model"], [free, "free_units"], [freePerDay, "free_units_per_day"],
      [minimum, "minimum_charge"],
      [unitPrice, "unit_price"], [packageSize, "package_size"], [packagePrice, "package_price"]]) {
      input.dataset.field = `${base}.${name}`;
    }
    tiered.dataset.field = `${base}.tiers`;
    tiers.forEach((tier, tierIndex) => tier.number(`${base}.tiers[${tierIndex}]`, tierIndex));
  }

  model.addEventListener("change", showModel);
  addTier.addEventListener("click", () => {
    addTierRow().focus();
    onChange();
  });
  remove.addEventListener("click", onRemove);
  for (const tier of initial.tiers || []) addTierRow(tier);
  showModel();

  return {
    element,
    number,
    focus: () => meter.focus(),
    value() {
      const charge = { meter: meter.value, model: model.value };
      if (free.value.trim()) charge.free_units = jsonNumber(free.value);
      if (freePerDay.value.trim()) charge.free_units_per_day = jsonNumber(freePerDay.value);
      put(charge, "minimum_charge", minimum.value);
      if (model.value === "per_unit") {
        put(charge, "unit_price", unitPrice.value);
      } else if (TIERED.has(model.value)) {
        charge.tiers = tiers.map((tier) => tier.value());
      } else {
        if (packageSize.value.trim()) charge.package_size = jsonNumber(packageSize.value);
        put(charge, "package_price", packagePrice.value);
      }
      return charge;
    },
  };
}

function tierEditor(initial, onRemove) {
  const upTo = text({ inputmode: "decimal", placeholder: "∞", "data-part": "up_to", value: initial.up_to ?? null });
  const unitPrice = text({ inputmode: "decimal", placeholder: "0.002", "data-part": "unit_price", value: initial.unit_price ?? null });
  const flatFee = text({ inputmode: "decimal", placeholder: "0", "data-part": "flat_fee", value: initial.flat_fee ?? null });
  const remove = h("button", { type: "button", class: "secondary small remove-tier" }, "×");
  remove.addEventListener("click", onRemove);
  const cell = (input) => h("span", { class: "cell" }, input);
  const element = h("div", { class: "tier-row" }, cell(upTo), cell(unitPrice), cell(flatFee), remove);
  return {
    element,
    focus: () => upTo.focus(),
    number(base, position) {
      element.dataset.field = base;
      for (const [input, name, label] of [[upTo, "up_to", "up to"], [unitPrice, "unit_price", "unit price"],
        [flatFee, "flat_fee", "flat fee"]]) {
        input.dataset.field = `${base}.${name}`;
        input.setAttribute("aria-label", `Tier ${position + 1} ${label}`);
      }
      remove.setAttribute("aria-label", `Remove tier ${position + 1}`);
    },
    value() {
      const tier = { up_to: upTo.value.trim() ? jsonNumber(upTo.value) : null };
      put(tier, "unit_price", unitPrice.value);
      put(tier, "flat_fee", flatFee.value);
      return tier;
    },
  };
}
