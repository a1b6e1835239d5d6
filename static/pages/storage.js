/* Storage (§8, §11), for staff: every customer that stores files or has a
   quota, with its quota bar; choosing one (#/storage/<id>) opens its files
   on top of the list (files.js, the same component as the customer
   portal's), with upload and delete for admin and finance. Any other
   customer can be opened from the list of all customers, e.g. to upload its
   first file. */

import * as api from "../api.js";
import { display, field, h, messageLine, showMessage, table } from "../dom.js";
import { showApiError } from "../field-errors.js";
import { filesPanel, quotaGauge } from "../files.js";

/** Who may open this page (the server answers 403 to others). */
export const ROLES = ["admin", "finance", "customer_success", "sales", "viewer"];
const WRITERS = ["admin", "finance"];
const PAGE_SIZE = 100;
const CUSTOMER_CHOICES = 1000;

export function render(main, { role, params }) {
  const chosen = params[0] ? Number(params[0]) : null;
  const canWrite = WRITERS.includes(role);
  const status = messageLine();
  const { table: list, body } = table(["Customer", ["Files", "num"], "Quota", ["", "row-actions"]], "storage");
  const more = h("button", { type: "button", class: "secondary more", hidden: true }, "Load more");
  const filesSlot = h("div", { class: "files-slot", id: "storage-files" });
  let cursor = null;
  let loads = 0;
  let gone = false;

  async function load(reset) {
    const mine = ++loads;
    try {
      const page = await api.get("/v1/storage", { limit: PAGE_SIZE, cursor: reset ? null : cursor });
      if (gone || mine !== loads) return;
      if (reset) body.replaceChildren();
      for (const entry of page.data) body.append(row(entry));
      if (reset && page.data.length === 0) {
        body.append(h("tr", {}, h("td", { colspan: 4, class: "empty" },
          "No customer stores files or has a quota yet.")));
      }
      cursor = page.next_cursor;
      more.hidden = !cursor;
      showMessage(status, "");
    } catch (error) {
      if (!gone && mine === loads) showApiError(status, "Could not load storage", error);
    }
  }

  function row(entry) {
    const selected = entry.customer_id === chosen;
    const open = selected ? h("span", { class: "muted" }, "Open above")
      : h("a", { href: `#/storage/${entry.customer_id}`, class: "open-files" }, "Files →");
    return h("tr", { "data-id": entry.customer_id, class: selected ? "selected" : null,
      "aria-current": selected ? "true" : null },
    h("td", { class: "customer" }, h("a", { href: `#/storage/${entry.customer_id}` }, display(entry.name)),
      h("span", { class: "email muted" }, display(entry.email))),
    h("td", { class: "num objects" }, display(entry.objects)),
    h("td", { class: "quota-cell" }, quotaGauge(entry.total_bytes, entry.quota_bytes)),
    h("td", { class: "row-actions" }, open));
  }

  more.addEventListener("click", () => load(false));
  main.append(
    h("div", { class: "page-head" }, h("h1", {}, "Storage"),
      h("p", { class: "muted" }, "Files customers store, against their quotas.")),
    filesSlot,
    h("section", { class: "card", id: "storage-customers" }, h("h2", {}, "Customers"), status, list, more,
      otherCustomer(chosen)));
  load(true);
  if (chosen !== null) {
    showFiles(filesSlot, chosen, canWrite, () => load(true));
    window.scrollTo(0, 0); // chosen lower down the list: its files are on top
  }
  return () => { gone = true; };
}

/** The chosen customer's files under its name. */
function showFiles(slot, customerId, canWrite, onChange) {
  const name = h("span", { class: "owner" }, `customer #${customerId}`);
  const message = messageLine();
  const panel = filesPanel({ customerId, canWrite, onChange, title: ["Files of ", name],
    aside: h("a", { href: "#/storage", class: "close-files" }, "Close") });
  if (!canWrite) {
    panel.element.querySelector(".section-head").after(
      h("p", { class: "muted read-only" }, "Read only: admin and finance upload and delete files."));
  }
  slot.replaceChildren(message, panel.element);
  api.get(`/v1/customers/${customerId}`).then((customer) => {
    name.replaceChildren(h("a", { href: `#/customers/${customer.id}` }, display(customer.name)));
  }).catch((error) => showApiError(message, "Could not load the customer", error));
}

/** Open the files of any customer, also one that stores nothing yet. */
function otherCustomer(chosen) {
  const select = h("select", { name: "customer_id", id: "storage-customer" },
    h("option", { value: "" }, "Loading customers…"));
  const form = h("form", { class: "form-inline other-customer" },
    field("Open the files of", select), h("button", { type: "submit", class: "secondary" }, "Open"));
  api.get("/v1/customers", { limit: CUSTOMER_CHOICES }).then((page) => {
    select.replaceChildren(h("option", { value: "" }, "Choose a customer"),
      ...page.data.map((customer) => h("option", { value: customer.id, selected: customer.id === chosen },
        `${customer.name} (#${customer.id})`)));
  }).catch(() => form.remove()); // the table still works
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (select.value) location.hash = `#/storage/${select.value}`;
  });
  return h("details", { class: "other" }, h("summary", {}, "Another customer…"), form);
}
