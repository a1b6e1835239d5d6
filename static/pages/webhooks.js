/* Webhooks (admin, §10): create an endpoint (its signing secret is shown this
   once), list and delete endpoints; each links to its deliveries. */

import * as api from "../api.js";
import { display, field, h, messageLine, showMessage, table, timeElement, whileBusy } from "../dom.js";
import { showApiError } from "../field-errors.js";

/** Who may open this page (the server answers 403 to others). */
export const ROLES = ["admin"];

export const EVENT_TYPES = ["invoice.created", "invoice.issued", "invoice.paid", "invoice.voided"];

export function render(main) {
  const status = messageLine();
  const { table: list, body } = table(["URL", "Events", ["Description", "wide-only"], ["Created", "wide-only"], ""],
    "webhooks");
  const more = h("button", { type: "button", class: "secondary more", hidden: true }, "Load more");
  let cursor = null;
  let generation = 0;

  async function load(reset) {
    const mine = ++generation;
    try {
      const page = await api.get("/v1/webhooks", { cursor: reset ? null : cursor });
      if (mine !== generation) return;
      if (reset) body.replaceChildren();
      for (const hook of page.data) body.append(row(hook, status, () => load(true)));
      if (reset && page.data.length === 0) {
        body.append(h("tr", {}, h("td", { colspan: 5, class: "empty" }, "No webhooks yet.")));
      }
      cursor = page.next_cursor;
      more.hidden = !cursor;
    } catch (error) {
      if (mine === generation) showApiError(status, "Could not load webhooks", error);
    }
  }

  more.addEventListener("click", () => load(false));
  main.append(
    h("div", { class: "page-head" }, h("h1", {}, "Webhooks")),
    createForm(() => load(true)),
    h("section", { class: "card" },
      h("div", { class: "section-head" }, h("h2", {}, "Endpoints"),
        h("p", { class: "muted" }, "Each delivery is a signed JSON POST; failures are retried with backoff.")),
      status, list, more));
  load(true);
}

function eventsText(events) {
  return events.includes("*") ? "all events" : events.join(", ");
}

function row(hook, status, reload) {
  const remove = h("button", { type: "button", class: "small secondary danger delete-webhook" }, "Delete");
  let armed = false;
  remove.addEventListener("click", async () => {
    if (!armed) { // the first click asks, the second deletes
      armed = true;
      remove.textContent = "Confirm delete";
      return;
    }
    remove.disabled = true;
    try {
      await api.del(`/v1/webhooks/${hook.id}`);
      showMessage(status, `Deleted the webhook to ${hook.url}; its pending deliveries are canceled.`, "ok");
      reload();
    } catch (error) {
      remove.disabled = false;
      showApiError(status, "Could not delete the webhook", error);
    }
  });
  return h("tr", { "data-id": hook.id },
    h("td", { class: "url" }, h("a", { href: `#/webhooks/${hook.id}` }, hook.url)),
    h("td", { class: "events" }, eventsText(hook.events)),
    h("td", { class: "wide-only description" }, display(hook.description)),
    h("td", { class: "wide-only time" }, timeElement(hook.created_at)),
    h("td", { class: "row-actions" }, h("div", { class: "actions" },
      h("a", { href: `#/webhooks/${hook.id}`, class: "deliveries-link" }, "Deliveries"), remove)));
}

function createForm(onCreated) {
  const message = messageLine();
  const secretBox = h("div", { class: "secret-once", id: "webhook-secret", hidden: true, role: "status" });
  const all = h("input", { type: "checkbox", name: "events", value: "*", checked: true });
  const singles = EVENT_TYPES.map((type) => h("input", { type: "checkbox", name: "events", value: type, disabled: true }));
  const sync = () => singles.forEach((box) => { box.disabled = all.checked; if (all.checked) box.checked = false; });
  all.addEventListener("change", sync);
  const form = h("form", { class: "stack", id: "create-webhook" },
    h("div", { class: "form-grid" },
      field("URL", h("input", { name: "url", type: "url", required: true, placeholder: "https://example.com/hooks/meterline",
        maxlength: 2000, "data-field": "url" })),
      field("Description", h("input", { name: "description", maxlength: 500, placeholder: "optional",
        "data-field": "description" }))),
    h("fieldset", { class: "event-choice", "data-field": "events" }, h("legend", {}, "Events"),
      h("label", { class: "check" }, all, "All events (also future ones)"),
      singles.map((box) => h("label", { class: "check" }, box, h("code", {}, box.value)))),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Create webhook")));

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const events = data.getAll("events").map(String);
    const body = { url: String(data.get("url") || "").trim(), events };
    const description = String(data.get("description") || "").trim();
    if (description) body.description = description;
    secretBox.hidden = true;
    secretBox.replaceChildren();
    whileBusy(form, async () => {
      try {
        const created = await api.post("/v1/webhooks", body);
        showMessage(message, `Created the webhook to ${created.url}.`, "ok");
        showSecret(secretBox, created);
        form.reset();
        sync();
        onCreated();
      } catch (error) {
        showApiError(message, "Could not create the webhook", error);
      }
    });
  });

  return h("section", { class: "card" }, h("h2", {}, "New webhook"), form, message, secretBox);
}

/** The signing secret, this once: it is not stored anywhere in the page afterwards. */
function showSecret(box, created) {
  const code = h("code", { class: "secret", id: "webhook-secret-value" }, created.secret);
  const copy = h("button", { type: "button", class: "small secondary" }, "Copy");
  const done = h("button", { type: "button", class: "small" }, "I have saved it");
  const note = h("small", { class: "hint" });
  copy.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(created.secret);
      note.textContent = "Copied to the clipboard.";
    } catch {
      getSelection().selectAllChildren(code);
      note.textContent = "Selected: copy it with Ctrl+C / ⌘C.";
    }
  });
  done.addEventListener("click", () => {
    box.hidden = true;
    box.replaceChildren();
  });
  box.replaceChildren(
    h("strong", {}, "Signing secret"),
    h("p", { class: "warning" }, "Copy it now: it is shown only this once and cannot be retrieved later. "
      + "Check each delivery's Meterline-Signature header with it."),
    h("div", { class: "secret-row" }, code, copy, done), note);
  box.hidden = false;
}
