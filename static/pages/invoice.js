/* One invoice: the actions the signed-in role may take in its current status
   (issue, approve / reject, record a payment, void, reissue, PDF), the header
   (status, customer, period, dates, payment), the lines with the tier
   breakdown, the totals, the action history and the payments (§7, §11).
   A draft is re-rated by the server when read, so this always shows current
   amounts. After every action the whole invoice is read again. */

import * as api from "../api.js";
import { append, display, field, h, messageLine, showMessage, table, timeElement, whileBusy } from "../dom.js";
import { downloadButton } from "../download.js";
import { showApiError } from "../field-errors.js";
import { invoiceBadges, invoiceTitle, isZero, money, periodText } from "../format.js";
import { invoiceDetail } from "../invoice-lines.js";

const WRITERS = ["admin", "finance"];      // issue, payments, void, reissue
const APPROVERS = ["admin", "customer_success", "sales"]; // and the customer's CSM
const METHODS = ["bank transfer", "card", "check", "cash", "direct debit"];

const words = (value) => String(value).replace(/_/g, " ");

export function render(main, { me, role, params }) {
  const invoiceId = params[0];
  const status = messageLine();
  const outcome = messageLine(); // the result of the last action; survives the refresh that follows it
  outcome.id = "action-message";
  const heading = h("h1", {}, `Invoice #${invoiceId}`);
  const badges = h("span", { class: "badges" });
  const actions = h("div", { class: "invoice-actions", id: "invoice-actions" });
  const header = h("dl", { class: "fields invoice-header" });
  const content = h("section", { class: "card invoice-lines", hidden: true });
  const history = h("section", { class: "card", id: "invoice-history", hidden: true });
  const payments = h("section", { class: "card", id: "invoice-payments", hidden: true });
  const pdf = downloadButton("Download PDF", () => [`/v1/invoices/${invoiceId}.pdf`, null, `invoice-${invoiceId}.pdf`],
    outcome, { id: "download-pdf" });
  main.append(
    h("div", { class: "page-head" }, h("a", { href: "#/invoices", class: "back" }, "← Invoices"), heading, badges),
    status,
    h("section", { class: "card actions-card" },
      h("div", { class: "section-head" }, h("h2", {}, "Actions"), h("div", { class: "actions" }, pdf)),
      outcome, actions),
    h("section", { class: "card" }, header),
    content, history, payments);

  let units = null; // meter key → unit, read once
  let left = false;
  let loads = 0;
  load();

  async function load() {
    const mine = ++loads;
    try {
      const [invoice, actionList, paymentList] = await Promise.all([
        api.get(`/v1/invoices/${invoiceId}`),
        // the history holds internal comments: staff only
        role === "customer" ? Promise.resolve({ data: [], hidden: true })
          : api.get(`/v1/invoices/${invoiceId}/actions`).catch((error) => ({ error })),
        api.get(`/v1/invoices/${invoiceId}/payments`).catch((error) => ({ error }))]);
      if (!units) {
        units = api.get("/v1/meters", { limit: 1000 })
          .then((meters) => new Map(meters.data.map((meter) => [meter.key, meter.unit])), () => new Map());
      }
      // The customer gives the name, the timezone and who its CSM is (who may approve).
      const [customer, meterUnits] = await Promise.all([
        api.get(`/v1/customers/${invoice.customer_id}`).catch(() => null), units]);
      if (left || mine !== loads) return;
      const title = invoiceTitle(invoice);
      heading.textContent = title;
      document.title = `${title} · Meterline`;
      badges.replaceChildren();
      append(badges, invoiceBadges(invoice));
      header.replaceChildren(...headerRows(invoice, customer));
      actions.replaceChildren(...actionControls(invoice, customer, { me, role, run, refresh: load }));
      content.replaceChildren(h("h2", {}, "Lines"), invoiceDetail(invoice, meterUnits));
      content.hidden = false;
      fillHistory(history, actionList);
      fillPayments(payments, paymentList, invoice, actorNames(actionList));
      showMessage(status, "");
    } catch (error) {
      if (!left && mine === loads) showApiError(status, "Could not load the invoice", error);
    }
  }

  /** POST an action from `form`; show the outcome, then read the invoice again. */
  function run(form, label, path, body, describe) {
    showMessage(outcome, `${label}…`, "info");
    return whileBusy(form, async () => {
      try {
        const reply = await api.post(`/v1/invoices/${invoiceId}/${path}`, body);
        if (left) return;
        outcome.replaceChildren();
        append(outcome, describe(reply));
        outcome.className = "message ok";
        outcome.hidden = false;
      } catch (error) {
        if (left) return;
        showApiError(outcome, `Could not ${label.toLowerCase()}`, error);
      }
      await load();
    });
  }

  return () => { left = true; };
}

// -- actions ---------------------------------------------------------------------

function actionControls(invoice, customer, context) {
  const { me, role } = context;
  const writer = WRITERS.includes(role);
  const isCsm = Boolean(me && me.kind === "user" && customer && customer.csm_user_id != null
    && customer.csm_user_id === me.user.id);
  const approver = APPROVERS.includes(role);  // a CSM approves by its role, like everyone
  const controls = [];
  const state = invoice.status;

  if (invoice.on_hold && state === "draft") {
    controls.push(h("p", { class: "note hold-note" },
      "On hold: an approver rejected this invoice (see the history). It is not issued automatically; "
      + "issue it again once it is corrected."));
  }
  if (writer && state === "draft") controls.push(finalizeForm(invoice, customer, context));
  if (state === "pending_approval") {
    if (approver) controls.push(approvalForm(invoice, context, isCsm));
    else controls.push(h("p", { class: "note" }, "Waiting for approval by customer success, sales or an admin."));
  }
  if (writer && state === "issued") controls.push(paymentForm(invoice, context));
  const voidable = state === "draft" || state === "pending_approval" || (state === "issued" && isZero(invoice.amount_paid));
  if (writer && voidable) controls.push(voidForm(invoice, context));
  if (writer && state === "issued" && !voidable) {
    controls.push(h("p", { class: "note muted" }, "Partly paid: it can no longer be voided (correct it with a credit)."));
  }
  if (state === "void") {
    controls.push(h("p", { class: "note" }, "Void", invoice.void_reason ? `: ${invoice.void_reason}` : "."));
    if (writer) controls.push(reissueForm(invoice, context));
  }
  if (state === "paid") controls.push(h("p", { class: "note" }, "Paid in full."));
  if (!controls.length) controls.push(h("p", { class: "muted note" }, "Nothing to do here for your role."));
  return controls;
}

function finalizeForm(invoice, customer, { run }) {
  const approval = Boolean(invoice.requires_approval ?? (customer && customer.requires_approval));
  const comment = h("input", { name: "comment", maxlength: 2000, placeholder: "optional" });
  const form = h("form", { class: "action-form", id: "finalize-form" },
    h("h3", {}, approval ? "Issue (needs approval)" : "Issue"),
    h("p", { class: "hint" }, approval
      ? "This customer requires approval: issuing sends the invoice to pending approval first."
      : "Assigns the invoice number, the due date and applies credits; then sends it."),
    h("div", { class: "form-row" }, field("Comment", comment),
      h("button", { type: "submit", id: "finalize" }, "Issue invoice")));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const body = comment.value.trim() ? { comment: comment.value.trim() } : {};
    run(form, "Issue the invoice", "finalize", body, (reply) => reply.status === "pending_approval"
      ? "Sent for approval: the invoice is pending approval."
      : `Issued as ${reply.number}${reply.status === "paid" ? " (nothing due: paid)" : ""}.`);
  });
  return form;
}

function approvalForm(invoice, { run }, asCsm) {
  const comment = h("textarea", { name: "comment", rows: 2, maxlength: 2000,
    placeholder: "Why? (required to reject)" });
  const approve = h("button", { type: "button", id: "approve" }, "Approve and issue");
  const reject = h("button", { type: "button", class: "secondary danger", id: "reject" }, "Reject");
  const form = h("form", { class: "action-form", id: "approval-form" },
    h("h3", {}, "Approval"),
    h("p", { class: "hint" }, asCsm ? "You are this customer's CSM. " : "",
      "Approving issues the invoice; rejecting sends it back to draft, on hold."),
    field("Comment", comment),
    h("div", { class: "actions" }, approve, reject));
  const body = () => (comment.value.trim() ? { comment: comment.value.trim() } : {});
  form.addEventListener("submit", (event) => event.preventDefault());
  approve.addEventListener("click", () => run(form, "Approve", "approve", body(),
    (reply) => `Approved: issued as ${reply.number}.`));
  reject.addEventListener("click", () => run(form, "Reject", "reject", body(),
    () => "Rejected: the invoice is back in draft, on hold."));
  return form;
}

function paymentForm(invoice, { run }) {
  const amount = h("input", { name: "amount", inputmode: "decimal", autocomplete: "off", required: true,
    value: invoice.balance_due, "data-field": "amount" });
  const method = h("input", { name: "method", list: "payment-methods", maxlength: 200, placeholder: "bank transfer" });
  const reference = h("input", { name: "reference", maxlength: 200, placeholder: "optional" });
  const form = h("form", { class: "action-form", id: "payment-form" },
    h("h3", {}, "Record a payment"),
    h("p", { class: "hint" }, `Balance due: ${money(invoice.balance_due, invoice.currency)}. Partial payments are fine.`),
    h("div", { class: "form-grid" },
      field(`Amount (${invoice.currency})`, amount), field("Method", method), field("Reference", reference),
      h("div", { class: "actions" }, h("button", { type: "submit", id: "record-payment" }, "Record payment"))),
    h("datalist", { id: "payment-methods" }, METHODS.map((name) => h("option", { value: name }))));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const body = { amount: amount.value.trim() };
    if (method.value.trim()) body.method = method.value.trim();
    if (reference.value.trim()) body.reference = reference.value.trim();
    run(form, "Record the payment", "payments", body, (reply) => {
      const paid = reply.invoice;
      return paid.status === "paid"
        ? `Recorded ${money(reply.payment.amount, reply.payment.currency)}: the invoice is paid in full.`
        : `Recorded ${money(reply.payment.amount, reply.payment.currency)}; `
          + `${money(paid.balance_due, paid.currency)} still due.`;
    });
  });
  return form;
}

function voidForm(invoice, { run }) {
  const reason = h("input", { name: "reason", maxlength: 2000, placeholder: "e.g. wrong plan" });
  const form = h("form", { class: "action-form", id: "void-form" },
    h("div", { class: "form-row" }, field("Reason", reason),
      h("button", { type: "submit", class: "secondary danger", id: "void" }, "Void invoice")),
    h("p", { class: "hint" }, invoice.status === "issued"
      ? "A void invoice keeps its number; credits it used come back. A new draft can be made with Reissue."
      : "Nothing is sent; a new draft can be made with Reissue."));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    run(form, "Void the invoice", "void", reason.value.trim() ? { reason: reason.value.trim() } : {},
      () => "Voided.");
  });
  return h("details", { class: "action-form danger-zone", id: "void-section" },
    h("summary", {}, "Void this invoice…"), form);
}

function reissueForm(invoice, { run }) {
  const form = h("form", { class: "action-form", id: "reissue-form" },
    h("div", { class: "form-row" },
      h("p", { class: "hint" }, "Creates a new draft for the same period, re-rated from the stored events."),
      h("button", { type: "submit", id: "reissue" }, "Reissue as a new draft")));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    run(form, "Reissue", "reissue", {}, (reply) => [
      "Reissued: ", h("a", { href: `#/invoices/${reply.id}`, id: "reissued-link" }, invoiceTitle(reply)),
      " replaces this invoice."]);
  });
  return form;
}

// -- header, history, payments -------------------------------------------------

function headerRows(invoice, customer) {
  const customerLink = h("a", { href: `#/customers/${invoice.customer_id}` },
    customer ? customer.name : `#${invoice.customer_id}`);
  const rows = [
    ["Status", words(invoice.status) + (invoice.on_hold ? ", on hold" : "")],
    ["Number", invoice.number || "assigned at issue"],
    ["Customer", customerLink],
    ["Period", periodText(invoice, customer ? customer.timezone : "UTC")],
    ["Period start", timeElement(invoice.period_start)],
    ["Period end", timeElement(invoice.period_end)],
    ["Currency", invoice.currency],
    ["Payment", invoice.payment_status ? words(invoice.payment_status) : null],
    ["Total", money(invoice.total, invoice.currency)],
    ["Amount due", money(invoice.amount_due, invoice.currency)],
    ["Amount paid", money(invoice.amount_paid, invoice.currency)],
    ["Balance due", money(invoice.balance_due, invoice.currency)],
    ["Issued", timeElement(invoice.issued_at)],
    ["Due", timeElement(invoice.due_at)],
  ];
  if (invoice.status === "void") rows.push(["Void reason", invoice.void_reason]);
  if (invoice.revision > 0) rows.push(["Revision", `${invoice.revision} (reissued)`]); // the first is 0
  return rows.map(([label, value]) => h("div", { "data-key": label.toLowerCase().replace(/ /g, "-") },
    h("dt", {}, label), h("dd", {}, value instanceof Node ? value : display(value))));
}

function unavailable(section, title, error) {
  const line = messageLine();
  showMessage(line, `Could not load: ${error.message}`, "error");
  section.replaceChildren(h("h2", {}, title), line);
  section.hidden = false;
}

function fillHistory(section, reply) {
  section.hidden = Boolean(reply.hidden);
  if (reply.hidden) return;
  if (reply.error) {
    unavailable(section, "History", reply.error);
    return;
  }
  const { table: list, body } = table(["When", "Who", "Role", "Action", "From → to", "Comment"], "history");
  for (const entry of reply.data) {
    body.append(h("tr", { "data-action": entry.action, "data-id": entry.id },
      h("td", { class: "time" }, timeElement(entry.at)),
      h("td", { class: "actor" }, display(entry.actor_name || entry.actor)),
      h("td", { class: "role" }, display(entry.role && words(entry.role))),
      h("td", { class: "action" }, words(entry.action)),
      h("td", { class: "change" }, entry.from_status ? words(entry.from_status) : "—", " → ",
        entry.to_status ? words(entry.to_status) : "—"),
      h("td", { class: `comment${entry.comment ? "" : " blank"}` }, display(entry.comment))));
  }
  if (!reply.data.length) body.append(h("tr", {}, h("td", { colspan: 6, class: "empty" }, "No actions yet.")));
  section.replaceChildren(h("h2", {}, "History"), list);
  section.hidden = false;
}

/** actor label ("user:3") → name, from the history (payments only carry the label). */
function actorNames(reply) {
  return new Map((reply.data || []).filter((entry) => entry.actor_name).map((entry) => [entry.actor, entry.actor_name]));
}

function fillPayments(section, reply, invoice, names) {
  if (reply.error) {
    unavailable(section, "Payments", reply.error);
    return;
  }
  const { table: list, body } = table(["When", ["Amount", "num"], "Method", "Reference", "By"], "payments");
  for (const payment of reply.data) {
    body.append(h("tr", { "data-id": payment.id },
      h("td", { class: "time" }, timeElement(payment.created_at)),
      h("td", { class: "num money amount" }, money(payment.amount, payment.currency)),
      h("td", { class: "method" }, display(payment.method)),
      h("td", { class: "reference" }, display(payment.reference)),
      h("td", { class: "by" }, display(names.get(payment.created_by) || payment.created_by))));
  }
  if (!reply.data.length) body.append(h("tr", {}, h("td", { colspan: 5, class: "empty" }, "No payments yet.")));
  section.replaceChildren(
    h("div", { class: "section-head" }, h("h2", {}, "Payments"),
      h("p", { class: "muted" }, `Paid ${money(invoice.amount_paid, invoice.currency)} of `
        + `${money(invoice.amount_due, invoice.currency)}`)),
    list);
  section.hidden = false;
}
