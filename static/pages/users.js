/* Users and API keys (§9). Admin: every user (create, change the role,
   disable, delete) and the API keys (create with the secret shown this once,
   revoke). Finance: customer users only — the server decides, the page only
   offers what the role may do. */

import * as api from "../api.js";
import { display, field, formValues, h, messageLine, showMessage, table, timeElement, whileBusy } from "../dom.js";
import { clearErrors, markErrors, showApiError } from "../field-errors.js";

/** Who may open this page (the server answers 403 to others). */
export const ROLES = ["admin", "finance"];

export const STAFF_ROLES = ["admin", "finance", "customer_success", "sales", "viewer", "ingest"];
const CUSTOMER = "customer";

const roleText = (role) => role.replace(/_/g, " ");

/** Customers by id (for names and the customer choices), loaded once per page. */
function customerBook() {
  let loaded = null;
  return {
    load() {
      loaded = loaded || api.get("/v1/customers", { limit: 1000 }).then((page) => page.data);
      return loaded;
    },
    async name(id) {
      const found = (await this.load().catch(() => [])).find((customer) => customer.id === id);
      return found ? found.name : null;
    },
  };
}

function customerCell(id, customers) {
  if (id === null || id === undefined) return "—";
  const link = h("a", { href: `#/customers/${id}` }, `#${id}`);
  customers.name(id).then((name) => { if (name) link.textContent = name; });
  return link;
}

async function fillCustomers(select, customers, line) {
  try {
    const list = await customers.load();
    select.replaceChildren(h("option", { value: "" }, list.length ? "Choose a customer" : "No customers yet"),
      ...list.map((customer) => h("option", { value: customer.id }, `${customer.name} (#${customer.id})`)));
  } catch (error) {
    showApiError(line, "Could not load the customers", error);
  }
}

/** A role select with a customer select that only shows for the role "customer". */
function scopeFields(roles, customers, line, { label = "Role", texts = {}, initial = "viewer" } = {}) {
  // the initial choice is the option marked selected, so a form reset comes back to it
  const role = h("select", { name: "role", "data-field": "role" },
    roles.map((value) => h("option", { value, selected: value === initial }, texts[value] || roleText(value))));
  const customer = h("select", { name: "customer_id", "data-field": "customer_id" }, h("option", { value: "" }, "Loading…"));
  const customerField = field("Customer", customer);
  const sync = () => { customerField.hidden = role.value !== CUSTOMER; };
  role.addEventListener("change", sync);
  sync();
  fillCustomers(customer, customers, line);
  return { fields: [field(label, role), customerField], role, customer, sync };
}

/** A list with "Load more" paging by next_cursor; `rowOf(item, reload)` draws a row. */
function pagedList({ path, headings, className, emptyText, rowOf, status, what }) {
  const { table: list, body } = table(headings, className);
  const more = h("button", { type: "button", class: "secondary more", hidden: true }, "Load more");
  let cursor = null;
  let generation = 0;
  async function load(reset) {
    const mine = ++generation;
    try {
      const page = await api.get(path, { cursor: reset ? null : cursor });
      if (mine !== generation) return;
      if (reset) body.replaceChildren();
      for (const item of page.data) body.append(rowOf(item, () => load(true)));
      if (reset && page.data.length === 0) {
        body.append(h("tr", {}, h("td", { colspan: headings.length, class: "empty" }, emptyText)));
      }
      cursor = page.next_cursor;
      more.hidden = !cursor;
    } catch (error) {
      if (mine === generation) showApiError(status, `Could not load ${what}`, error);
    }
  }
  more.addEventListener("click", () => load(false));
  const has = (id) => [...body.rows].some((row) => row.dataset.id === String(id));
  return { elements: [list, more], load, has };
}

/** A customer must be chosen for the role "customer": said at once, nothing is sent. */
function missingCustomer(form, values, line) {
  if (values.role !== CUSTOMER || values.customer_id) return false;
  markErrors(form, [{ field: "customer_id", message: "choose the customer" }]);
  showMessage(line, "Choose the customer this belongs to.", "error");
  return true;
}

/** A button that asks first: the first click arms it, the second runs `action`. */
function confirmButton(label, confirmLabel, className, action) {
  const button = h("button", { type: "button", class: `small secondary danger ${className}` }, label);
  let armed = false;
  button.addEventListener("click", async () => {
    if (!armed) {
      armed = true;
      button.textContent = confirmLabel;
      return;
    }
    button.disabled = true;
    const ok = await action();
    if (!ok) {
      button.disabled = false;
      armed = false;
      button.textContent = label;
    }
  });
  return button;
}

export function render(main, { me, role }) {
  const customers = customerBook();
  const myId = me.kind === "user" ? me.user.id : null;
  const status = messageLine();
  const context = { role, myId, customers, status };
  const users = pagedList({ path: "/v1/users", className: "users", status, what: "users",
    headings: ["User", "Role", "Customer", ["Created", "wide-only"], "Status", ""],
    emptyText: role === "admin" ? "No users yet." : "No customer users yet.",
    rowOf: (user, reload) => userRow(user, { ...context, reload }) });
  context.listed = users.has;
  main.append(
    h("div", { class: "page-head" }, h("h1", {}, role === "admin" ? "Users and API keys" : "Customer users")),
    userForm(role, customers, () => users.load(true)),
    h("section", { class: "card", id: "users" },
      h("div", { class: "section-head" }, h("h2", {}, "Users"),
        h("p", { class: "muted" }, role === "admin" ? "People who sign in to the dashboard or a customer portal."
          : "Finance manages the users of the customer portals.")),
      status, users.elements));
  users.load(true);
  if (role === "admin") keysSection(main, customers, me.kind === "api_key" ? me.api_key.id : null);
}

// -- users ----------------------------------------------------------------------

function userForm(role, customers, onCreated) {
  const message = messageLine();
  const roles = role === "admin" ? [...STAFF_ROLES, CUSTOMER] : [CUSTOMER];
  const scope = scopeFields(roles, customers, message, { texts: { customer: "customer (portal)" } });
  const form = h("form", { class: "form-grid", id: "create-user" },
    field("E-mail", h("input", { name: "email", type: "email", required: true, maxlength: 254, autocomplete: "off",
      "data-field": "email" })),
    field("Name", h("input", { name: "name", required: true, maxlength: 200, "data-field": "name" })),
    ...scope.fields,
    field("Password", h("input", { name: "password", type: "password", required: true, autocomplete: "new-password",
      placeholder: "at least 8 characters", "data-field": "password" })),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Create user")));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const values = formValues(form);
    const body = { email: values.email, name: values.name, role: values.role,
      password: new FormData(form).get("password") }; // a password is taken as typed, spaces included
    if (missingCustomer(form, values, message)) return;
    if (values.role === CUSTOMER) body.customer_id = Number(values.customer_id);
    whileBusy(form, async () => {
      try {
        const created = await api.post("/v1/users", body);
        clearErrors(form);
        showMessage(message, `Created the ${roleText(created.role)} user ${created.email}.`, "ok");
        form.reset();
        scope.sync();
        onCreated();
      } catch (error) {
        markErrors(form, error.details);
        showApiError(message, "Could not create the user", error);
      }
    });
  });
  return h("details", { class: "card create", id: "new-user" },
    h("summary", {}, role === "admin" ? "New user" : "New customer user"), form, message);
}

function userRow(user, context) {
  const own = user.id === context.myId;
  const who = h("td", { class: "user" }, h("span", { class: "email" }, user.email),
    own ? h("span", { class: "badge" }, "you") : null,
    h("small", { class: "name muted" }, display(user.name)));
  const status = user.disabled ? h("span", { class: "badge status status-void" }, "disabled")
    : h("span", { class: "badge status status-active" }, "active");
  const actions = own ? [] : [disableButton(user, context), deleteButton(user, context)];
  return h("tr", { "data-id": user.id, "data-email": user.email, "data-role": user.role },
    who,
    h("td", { class: "role" }, roleControl(user, own, context)),
    h("td", { class: user.customer_id ? "customer" : "customer blank" }, customerCell(user.customer_id, context.customers)),
    h("td", { class: "wide-only time created" }, timeElement(user.created_at)),
    h("td", { class: "status" }, status),
    h("td", { class: "row-actions" }, h("div", { class: "actions" }, actions)));
}

function patchUser(user, body) {
  return api.request("PATCH", `/v1/users/${user.id}`, body);
}

/** Staff roles can be changed by an admin (not one's own); a customer user stays one. */
function roleControl(user, own, { role, status, reload }) {
  if (own || user.role === CUSTOMER || role !== "admin") return roleText(user.role);
  const select = h("select", { class: "change-role", "aria-label": `Role of ${user.email}` },
    STAFF_ROLES.map((value) => h("option", { value, selected: value === user.role }, roleText(value))));
  select.addEventListener("change", async () => {
    const wanted = select.value;
    select.disabled = true;
    try {
      const changed = await patchUser(user, { role: wanted });
      showMessage(status, `${changed.email} is now ${roleText(changed.role)} (was ${roleText(user.role)}).`, "ok");
      reload();
    } catch (error) {
      select.value = user.role;
      select.disabled = false;
      showApiError(status, `Could not change the role of ${user.email}`, error);
    }
  });
  return select;
}

function disableButton(user, { status, reload }) {
  const label = user.disabled ? "Enable" : "Disable";
  const button = h("button", { type: "button", class: "small secondary toggle-user" }, label);
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      await patchUser(user, { disabled: !user.disabled });
      showMessage(status, user.disabled ? `${user.email} may sign in again.`
        : `${user.email} is disabled: signing in is refused until enabled again.`, "ok");
      reload();
    } catch (error) {
      button.disabled = false;
      showApiError(status, `Could not ${label.toLowerCase()} ${user.email}`, error);
    }
  });
  return button;
}

function deleteButton(user, { status, reload, listed }) {
  return confirmButton("Delete", "Confirm delete", "delete-user", async () => {
    try {
      await api.del(`/v1/users/${user.id}`);
    } catch (error) {
      showApiError(status, `Could not delete ${user.email}`, error);
      return false;
    }
    await reload();
    // A user who is a customer's success manager is kept, disabled, for that reference.
    showMessage(status, listed(user.id) ? `${user.email} is a customer's success manager, so the user is kept, disabled.`
      : `Deleted ${user.email}; their sessions are signed out.`, "ok");
    return true;
  });
}

// -- API keys (admin) --------------------------------------------------------------

function keysSection(main, customers, ownKey) {
  const status = messageLine();
  const keys = pagedList({ path: "/v1/api-keys", className: "api-keys", status, what: "API keys",
    headings: ["Name", "Access", ["Prefix", "wide-only"], ["Created", "wide-only"], "Status", ""],
    emptyText: "No API keys yet.", rowOf: (key, reload) => keyRow(key, { customers, status, reload, own: key.id === ownKey }) });
  main.append(keyForm(customers, () => keys.load(true)),
    h("section", { class: "card", id: "api-keys" },
      h("div", { class: "section-head" }, h("h2", {}, "API keys"),
        h("p", { class: "muted" }, "Listed by prefix only: a key's secret is shown once, when it is created.")),
      status, keys.elements));
  keys.load(true);
}

function keyForm(customers, onCreated) {
  const message = messageLine();
  const secretBox = h("div", { class: "secret-once", id: "api-key-secret", hidden: true, role: "status" });
  const scope = scopeFields([...STAFF_ROLES, CUSTOMER], customers, message,
    { label: "Access", texts: { customer: "one customer (its own data)", ingest: "ingest (send events)" } });
  const form = h("form", { class: "form-grid", id: "create-key" },
    field("Name", h("input", { name: "name", required: true, maxlength: 200, placeholder: "e.g. CI ingest",
      "data-field": "name" })),
    ...scope.fields,
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Create API key")));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const values = formValues(form);
    const body = { name: values.name };
    hideSecret(secretBox);
    if (missingCustomer(form, values, message)) return;
    if (values.role === CUSTOMER) body.customer_id = Number(values.customer_id);
    else body.role = values.role;
    whileBusy(form, async () => {
      try {
        const created = await api.post("/v1/api-keys", body);
        clearErrors(form);
        showMessage(message, `Created the API key “${created.name}”.`, "ok");
        showSecret(secretBox, created);
        form.reset();
        scope.sync();
        onCreated();
      } catch (error) {
        markErrors(form, error.details);
        showApiError(message, "Could not create the API key", error);
      }
    });
  });
  return h("details", { class: "card create", id: "new-key" }, h("summary", {}, "New API key"), form, message, secretBox);
}

function hideSecret(box) {
  box.hidden = true;
  box.replaceChildren();
}

/** The key's secret, this once, in a read-only field; nothing keeps it once the box closes. */
function showSecret(box, created) {
  const input = h("input", { type: "text", readonly: true, class: "secret", id: "api-key-secret-value",
    "aria-label": "The new API key", spellcheck: "false", autocomplete: "off" });
  input.value = created.key;
  const copy = h("button", { type: "button", class: "small secondary", id: "copy-api-key" }, "Copy");
  const done = h("button", { type: "button", class: "small", id: "api-key-saved" }, "I have saved it");
  const note = h("small", { class: "hint copy-note", "aria-live": "polite" });
  input.addEventListener("focus", () => input.select());
  copy.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(input.value);
      note.textContent = "Copied to the clipboard.";
    } catch {
      input.focus();
      input.select();
      note.textContent = "Selected: copy it with Ctrl+C / ⌘C.";
    }
  });
  done.addEventListener("click", () => hideSecret(box));
  box.replaceChildren(
    h("strong", {}, `API key “${created.name}”`),
    h("p", { class: "warning" }, "Copy it now: it will not be shown again. Meterline keeps only a digest, so a lost key "
      + "cannot be recovered — revoke it and create a new one."),
    h("div", { class: "secret-row" }, input, copy, done), note);
  box.hidden = false;
}

function keyAccess(key, customers) {
  if (key.customer_id === null || key.customer_id === undefined) return roleText(key.role);
  return h("span", {}, "customer ", customerCell(key.customer_id, customers));
}

function keyRow(key, { customers, status, reload, own }) {
  const state = key.revoked
    ? [h("span", { class: "badge status status-void" }, "revoked"), " ", timeElement(key.revoked_at)]
    : h("span", { class: "badge status status-active" }, "active");
  const revoke = key.revoked || own ? null : confirmButton("Revoke", "Confirm revoke", "revoke-key", async () => {
    try {
      await api.del(`/v1/api-keys/${key.id}`);
      showMessage(status, `Revoked the API key “${key.name}”: it no longer signs in.`, "ok");
      reload();
      return true;
    } catch (error) {
      showApiError(status, `Could not revoke “${key.name}”`, error);
      return false;
    }
  });
  return h("tr", { "data-id": key.id, "data-revoked": key.revoked ? "true" : "false" },
    h("td", { class: "name" }, display(key.name), own ? h("span", { class: "badge", title: "The key you are signed in with" }, "you") : null),
    h("td", { class: "access" }, keyAccess(key, customers)),
    h("td", { class: "wide-only prefix" }, h("code", {}, `${key.prefix}…`)),
    h("td", { class: "wide-only time created" }, timeElement(key.created_at)),
    h("td", { class: "status" }, state),
    h("td", { class: "row-actions" }, h("div", { class: "actions" }, revoke)));
}
