/* One webhook (admin): its settings and its deliveries, newest first, each
   with status, attempts, the last status code or error, when it is retried,
   the attempt log and the payload sent. */

import * as api from "../api.js";
import { display, h, messageLine, showMessage, table, timeElement } from "../dom.js";
import { showApiError } from "../field-errors.js";
import { statusBadge } from "../format.js";

/** Who may open this page (the server answers 403 to others). */
export const ROLES = ["admin"];

export function render(main, { params }) {
  const webhookId = params[0];
  const status = messageLine();
  const heading = h("h1", {}, `Webhook #${webhookId}`);
  const settings = h("dl", { class: "fields webhook-settings" });
  const list = h("div", { class: "deliveries", id: "deliveries" });
  const more = h("button", { type: "button", class: "secondary more", hidden: true }, "Load more");
  const refresh = h("button", { type: "button", class: "small secondary", id: "refresh-deliveries" }, "Refresh");
  const updated = h("small", { class: "muted", id: "deliveries-updated" });
  let cursor = null;
  let generation = 0;

  main.append(
    h("div", { class: "page-head" }, h("a", { href: "#/webhooks", class: "back" }, "← Webhooks"), heading),
    status,
    h("section", { class: "card" }, settings),
    h("section", { class: "card" },
      h("div", { class: "section-head" }, h("h2", {}, "Deliveries"), h("div", { class: "actions" }, updated, refresh)),
      list, more));

  async function loadSettings() {
    try {
      const hook = await api.get(`/v1/webhooks/${webhookId}`);
      heading.textContent = `Webhook #${hook.id}`;
      document.title = `Webhook #${hook.id} · Meterline`;
      settings.replaceChildren(...[
        ["URL", h("code", { class: "url" }, hook.url)],
        ["Events", hook.events.includes("*") ? "all events" : hook.events.join(", ")],
        ["Description", display(hook.description)],
        ["Created", timeElement(hook.created_at)],
      ].map(([label, value]) => h("div", { "data-key": label.toLowerCase() }, h("dt", {}, label), h("dd", {}, value))));
    } catch (error) {
      showApiError(status, "Could not load the webhook", error);
    }
  }

  async function load(reset) {
    const mine = ++generation;
    try {
      const page = await api.get(`/v1/webhooks/${webhookId}/deliveries`, { cursor: reset ? null : cursor });
      if (mine !== generation) return;
      if (reset) list.replaceChildren();
      for (const delivery of page.data) list.append(deliveryCard(delivery));
      if (reset && page.data.length === 0) {
        list.append(h("p", { class: "empty" }, "No deliveries yet: one is queued when a subscribed event happens."));
      }
      cursor = page.next_cursor;
      more.hidden = !cursor;
      updated.textContent = `Updated ${new Date().toLocaleTimeString()}`;
    } catch (error) {
      if (mine === generation) showApiError(status, "Could not load the deliveries", error);
    }
  }

  refresh.addEventListener("click", () => { showMessage(status, ""); load(true); });
  more.addEventListener("click", () => load(false));
  loadSettings();
  load(true);
}

function outcomeText(delivery) {
  if (delivery.status === "delivered") return `HTTP ${display(delivery.last_status_code)}`;
  if (delivery.last_error) return delivery.last_error;
  if (delivery.last_status_code) return `HTTP ${delivery.last_status_code}`;
  return delivery.status === "pending" ? "not sent yet" : "—";
}

function deliveryCard(delivery) {
  const failed = delivery.status === "failed" || (delivery.attempts > 0 && delivery.status !== "delivered");
  const facts = [
    ["Attempts", String(delivery.attempts), "attempts"],
    ["Last status", delivery.last_status_code === null || delivery.last_status_code === undefined
      ? "—" : String(delivery.last_status_code), "last-status-code"],
    ["Last error", display(delivery.last_error), "last-error"],
    ["Queued", timeElement(delivery.created_at), "created"],
    delivery.status === "delivered"
      ? ["Delivered", timeElement(delivery.delivered_at), "delivered"]
      : ["Next attempt", delivery.next_attempt_at ? timeElement(delivery.next_attempt_at) : "none", "next-attempt"],
  ];
  return h("article", { class: `delivery${failed ? " has-failures" : ""}`, "data-id": delivery.id,
    "data-status": delivery.status },
  h("header", {},
    statusBadge(delivery.status), h("code", { class: "event-type" }, delivery.event_type),
    h("span", { class: "outcome muted" }, outcomeText(delivery)),
    h("small", { class: "muted event-id" }, delivery.event_id)),
  h("dl", { class: "fields compact" }, facts.map(([label, value, key]) =>
    h("div", { "data-key": key }, h("dt", {}, label), h("dd", {}, value)))),
  attemptLog(delivery),
  h("details", { class: "payload" }, h("summary", {}, "Payload"),
    h("pre", {}, JSON.stringify(delivery.payload, null, 2))));
}

function attemptLog(delivery) {
  const log = delivery.attempt_log || [];
  const { table: element, body } = table(["#", "At", "Status", ["Duration", "num"], "Response / error"], "attempts");
  log.forEach((attempt, index) => {
    body.append(h("tr", { class: attempt.error || !(attempt.status_code >= 200 && attempt.status_code < 300) ? "failed" : "ok" },
      h("td", { class: "num" }, index + 1),
      h("td", { class: "time" }, timeElement(attempt.at)),
      h("td", { class: "code" }, display(attempt.status_code)),
      h("td", { class: "num" }, attempt.duration_ms === null || attempt.duration_ms === undefined
        ? "—" : `${attempt.duration_ms} ms`),
      h("td", { class: "response" }, attempt.error ? h("span", { class: "error-text" }, attempt.error) : null,
        attempt.error && attempt.response ? " " : null, attempt.response ? h("code", {}, attempt.response) : null,
        !attempt.error && !attempt.response ? "—" : null)));
  });
  if (!log.length) body.append(h("tr", {}, h("td", { colspan: 5, class: "empty" }, "Not attempted yet.")));
  return h("details", { class: "attempt-log", open: log.length > 0 && delivery.status !== "delivered" },
    h("summary", {}, `Attempt log (${log.length})`), element);
}
