/* Jobs (staff, §10): the scheduler's runs, newest first, each summarised
   (drafts created, issued, sent for approval, webhooks, e-mails, raw events
   archived and into which files); an admin
   can run the scheduler now. */

import * as api from "../api.js";
import { h, messageLine, showMessage, table, timeElement, whileBusy } from "../dom.js";
import { showApiError } from "../field-errors.js";
import { statusBadge } from "../format.js";

/** Who may open this page (the server answers 403 to others). */
export const ROLES = ["admin", "finance", "customer_success", "sales", "viewer"];

const plural = (count, one, many = `${one}s`) => `${count} ${count === 1 ? one : many}`;

/** The counts of a run's details as short phrases: [text, key, count]. */
export function summary(details = {}) {
  const items = [];
  const count = (value) => (typeof value === "number" ? value : Number(value) || 0);
  if ("drafts_created" in details) items.push([`${plural(count(details.drafts_created), "draft")} created`, "drafts_created", count(details.drafts_created)]);
  if ("issued" in details) items.push([`${count(details.issued)} issued`, "issued", count(details.issued)]);
  if ("pending_approval" in details) items.push([`${count(details.pending_approval)} sent for approval`, "pending_approval", count(details.pending_approval)]);
  const hooks = details.webhooks;
  if (hooks && typeof hooks === "object") {
    items.push([`${plural(count(hooks.delivered), "webhook")} delivered`, "webhooks_delivered", count(hooks.delivered)]);
    items.push([`${plural(count(hooks.failed), "webhook")} failed`, "webhooks_failed", count(hooks.failed)]);
  }
  const mails = details.emails;
  if (mails && typeof mails === "object") {
    items.push([`${plural(count(mails.sent), "e-mail")} sent`, "emails_sent", count(mails.sent)]);
    if (count(mails.failed)) items.push([`${plural(count(mails.failed), "e-mail")} failed`, "emails_failed", count(mails.failed)]);
  }
  if ("events_archived" in details) {
    const files = Array.isArray(details.archive_files) ? details.archive_files : [];
    items.push([`${plural(count(details.events_archived), "event")} archived` + (files.length ? ` into ${files.join(", ")}` : ""),
      "events_archived", count(details.events_archived)]);
  }
  if (count(details.events_recovered)) {
    items.push([`${plural(count(details.events_recovered), "archived event")} removed after an interrupted pass`,
      "events_recovered", count(details.events_recovered)]);
  }
  if (count(details.archived_ids_forgotten)) {
    items.push([`${plural(count(details.archived_ids_forgotten), "archived id")} past the lateness window forgotten`,
      "archived_ids_forgotten", count(details.archived_ids_forgotten)]);
  }
  if (count(details.idempotency_keys_purged)) {
    items.push([`${plural(count(details.idempotency_keys_purged), "idempotency key")} purged`,
      "idempotency_keys_purged", count(details.idempotency_keys_purged)]);
  }
  return items;
}

function durationText(job) {
  const ms = Date.parse(job.finished_at) - Date.parse(job.started_at);
  if (!Number.isFinite(ms)) return "—";
  return ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(1)} s`;
}

function summaryList(job) {
  const details = job.details || {};
  const items = summary(details).map(([text, key, value]) =>
    h("li", { "data-key": key, class: value ? (key.endsWith("failed") ? "bad" : "some") : "none" }, text));
  if (details.error) items.push(h("li", { class: "bad", "data-key": "error" }, details.error));
  if (details.reason) items.push(h("li", { "data-key": "reason" }, details.reason));
  return h("ul", { class: "job-summary" }, items);
}

/** Shipping to ClickHouse (shown when the server ships there): backlog, last shipment, last error. */
export function shippingCard(status) {
  const items = [
    h("li", { "data-key": "backlog", class: status.backlog ? "some" : "none" },
      status.backlog ? `${plural(status.backlog, "event")} waiting to be shipped` : "Nothing waiting to be shipped"),
    h("li", { "data-key": "last_shipped_at" }, "Last shipment: ",
      status.last_shipped_at ? timeElement(status.last_shipped_at) : "none yet"),
  ];
  if (status.last_error) {
    // an error before the last shipment is over: shown, not in red
    const over = status.last_shipped_at && status.last_error_at
      && Date.parse(status.last_shipped_at) > Date.parse(status.last_error_at);
    items.push(h("li", { "data-key": "last_error", class: over ? "none" : "bad" },
      over ? "Earlier ClickHouse error" : "Last ClickHouse error",
      status.last_error_at ? [" (", timeElement(status.last_error_at), ")"] : "", `: ${status.last_error}`));
  }
  return h("section", { class: "card", id: "clickhouse-shipping" },
    h("h2", {}, "ClickHouse"),
    h("p", { class: "muted intro" }, "Stored events are shipped to ClickHouse; usage analytics and the event "
      + "search read there while nothing waits, the node otherwise."),
    h("ul", { class: "job-summary" }, items));
}

function row(job, fresh) {
  return h("tr", { "data-id": job.id, "data-outcome": job.outcome, class: fresh ? "new" : null },
    h("td", { class: "time started" }, timeElement(job.started_at)),
    h("td", { class: "outcome" }, statusBadge(job.outcome)),
    h("td", { class: "num wide-only duration" }, durationText(job)),
    h("td", { class: "trigger" }, job.details && job.details.trigger ? job.details.trigger : job.name),
    h("td", { class: "summary" }, summaryList(job)));
}

export function render(main, { role }) {
  const status = messageLine();
  const { table: list, body } = table(["Started", "Outcome", ["Took", "num wide-only"], "Trigger", "Summary"], "jobs");
  const more = h("button", { type: "button", class: "secondary more", hidden: true }, "Load more");
  let cursor = null;
  let generation = 0;
  let seen = null; // ids shown before a reload, to mark the new runs

  async function load(reset) {
    const mine = ++generation;
    try {
      const page = await api.get("/v1/jobs", { cursor: reset ? null : cursor });
      if (mine !== generation) return;
      if (reset) {
        const card = main.querySelector("#clickhouse-shipping");
        if (page.clickhouse) {
          if (card) card.replaceWith(shippingCard(page.clickhouse));
          else main.append(shippingCard(page.clickhouse));
        }
        const before = seen;
        body.replaceChildren();
        seen = new Set();
        for (const job of page.data) {
          body.append(row(job, before !== null && !before.has(job.id)));
          seen.add(job.id);
        }
      } else {
        for (const job of page.data) {
          body.append(row(job, false));
          seen.add(job.id);
        }
      }
      if (reset && page.data.length === 0) {
        body.append(h("tr", {}, h("td", { colspan: 5, class: "empty" },
          "No runs yet: the scheduler records one every interval.")));
      }
      cursor = page.next_cursor;
      more.hidden = !cursor;
      showMessage(status, "");
    } catch (error) {
      if (mine === generation) showApiError(status, "Could not load the jobs", error);
    }
  }

  more.addEventListener("click", () => load(false));
  main.append(
    h("div", { class: "page-head" }, h("h1", {}, "Jobs"), role === "admin" ? runControl(() => load(true)) : null),
    h("section", { class: "card" },
      h("p", { class: "muted intro" }, "Each scheduler run drafts ended periods, issues drafts whose grace period "
        + "has passed, sends due webhooks and e-mails."),
      status, list, more));
  load(true);
}

function runControl(onDone) {
  const message = messageLine();
  const form = h("form", { class: "run-invoices", id: "run-jobs" },
    h("button", { type: "submit", id: "run-now" }, "Run now"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    showMessage(message, "Running…", "info");
    whileBusy(form, async () => {
      try {
        const job = await api.post("/v1/jobs/run", {});
        const counts = summary(job.details).filter(([, , value]) => value).map(([text]) => text);
        showMessage(message, `Run #${job.id}: ${job.outcome}${counts.length ? ` — ${counts.join(", ")}` : ", nothing to do"}.`,
          job.outcome === "error" ? "error" : "ok");
        await onDone();
      } catch (error) {
        showApiError(message, "Could not run the scheduler", error);
      }
    });
  });
  return h("div", { class: "page-actions" }, form, message);
}
