/* The notifications bell in the top bar (§10, §11), for staff and customer
   users alike (the portal too). The badge is the caller's `unread_count`
   (GET /v1/notifications?unread=true), fetched again on each
   `notification.created` of the live stream, and every 5 s while the stream
   is down (live.fallback). The panel lists the latest notifications; a click
   on an unread one marks it read, "Mark all read" marks them all.

   API keys have no read state (the server answers `read: null` and 403 to
   marking): for a key the bell shows no count, the panel lists the
   notifications without read marks or controls, and both say why. */

import * as api from "./api.js";
import { append, h, messageLine, showMessage } from "./dom.js";
import { showApiError } from "./field-errors.js";
import * as live from "./live.js";
import { coalesce, localTime } from "./alert-list.js";

/** The roles that may read notifications (the server answers 403 to others, e.g. ingest keys). */
const READERS = ["admin", "finance", "customer_success", "sales", "viewer", "customer"];
const STAFF = ["admin", "finance", "customer_success", "sales", "viewer"];
const SHOWN = 20;
const KEY_NOTE = "API keys have no read state: there is no unread count, and nothing can be marked read."
  + " Sign in as a user to keep track of what you have read.";

let current = null; // the bell of the signed-in identity: { me, stop }

/** Show the bell for `me` (GET /v1/auth/me); calling it again for the same identity does nothing. */
export function start(me) {
  if (current && current.me === me) return;
  stop();
  const root = document.getElementById("bell");
  if (!READERS.includes(me.role)) {
    root.hidden = true;
    return;
  }
  current = { me, stop: bell(root, me) };
}

/** Hide the bell and stop its updates (sign-out). */
export function stop() {
  if (current) current.stop();
  current = null;
  document.getElementById("bell").hidden = true;
}

function bell(root, me) {
  const button = root.querySelector("#bell-button");
  const badge = root.querySelector("#bell-count");
  const panel = root.querySelector("#bell-panel");
  const hasReadState = me.kind === "user";
  const status = messageLine();
  const list = h("ul", { class: "notification-list plain", id: "notification-list" });
  const markAll = h("button", { type: "button", class: "small secondary", id: "mark-all-read", disabled: true },
    "Mark all read");
  const footer = h("p", { class: "notification-foot muted", hidden: true });
  panel.replaceChildren(); // (replaceChildren would print a null as "null"; append leaves it out)
  append(panel, [
    h("div", { class: "notification-head" }, h("h2", {}, "Notifications"), hasReadState ? markAll : null),
    hasReadState ? null : h("p", { class: "muted key-note", id: "bell-key-note" }, KEY_NOTE),
    status, list, footer]);
  let stopped = false;
  let countLoads = 0;
  let listLoads = 0;
  let unread = 0;

  function showCount(count) {
    unread = count;
    badge.textContent = count > 99 ? "99+" : String(count);
    badge.dataset.count = String(count);
    badge.hidden = count === 0;
    markAll.disabled = count === 0;
    const words = count === 0 ? "no unread notifications" : `${count} unread notification${count === 1 ? "" : "s"}`;
    button.title = `Notifications: ${words}`;
    button.setAttribute("aria-label", `Notifications, ${words}`);
  }

  async function loadCount() {
    if (!hasReadState) return;
    const mine = ++countLoads;
    try {
      const page = await api.get("/v1/notifications", { unread: "true", limit: 1 });
      if (!stopped && mine === countLoads) showCount(page.unread_count);
    } catch {
      // the badge keeps its last count; the panel says what went wrong when opened
    }
  }

  async function loadList() {
    const mine = ++listLoads;
    try {
      const page = await api.get("/v1/notifications", { limit: SHOWN });
      if (stopped || mine !== listLoads) return;
      list.replaceChildren(...page.data.map(item));
      if (!page.data.length) list.append(h("li", { class: "empty" }, "No notifications yet."));
      if (hasReadState) showCount(page.unread_count);
      const more = page.next_cursor ? `The latest ${SHOWN}. ` : null;
      footer.replaceChildren();
      append(footer, [more, STAFF.includes(me.role) ? h("a", { href: "#/alerts", class: "all-alerts" }, "All alerts →") : null]);
      footer.hidden = !footer.childNodes.length;
      showMessage(status, "");
    } catch (error) {
      if (!stopped && mine === listLoads) showApiError(status, "Could not load the notifications", error);
    }
  }

  function item(notification) {
    const isUnread = notification.read === false;
    const content = [
      h("span", { class: "notification-title" }, isUnread ? h("span", { class: "unread-dot", title: "Unread" }) : null,
        h("strong", {}, notification.title)),
      h("span", { class: "notification-message" }, notification.message),
      h("span", { class: "notification-time muted" }, localTime(notification.created_at),
        isUnread ? h("span", { class: "unread-word" }, " · unread") : null)];
    const entry = h("li", { class: `notification${isUnread ? " unread" : ""}`, "data-id": notification.id,
      "data-read": notification.read === null ? "none" : String(notification.read) });
    if (!isUnread) {
      entry.append(h("div", { class: "notification-body" }, content));
      return entry;
    }
    const open = h("button", { type: "button", class: "notification-body mark-read", title: "Mark this one read" }, content);
    open.addEventListener("click", async () => {
      open.disabled = true;
      try {
        const updated = await api.post(`/v1/notifications/${notification.id}/read`, {});
        if (stopped) return;
        entry.replaceWith(item(updated));
        loadCount();
      } catch (error) {
        open.disabled = false;
        showApiError(status, "Could not mark it read", error);
      }
    });
    entry.append(open);
    return entry;
  }

  markAll.addEventListener("click", async () => {
    markAll.disabled = true;
    try {
      await api.post("/v1/notifications/read-all", {});
      if (stopped) return;
      showCount(0);
      loadList();
    } catch (error) {
      markAll.disabled = unread === 0;
      showApiError(status, "Could not mark them read", error);
    }
  });

  function open() {
    panel.hidden = false;
    button.setAttribute("aria-expanded", "true");
    root.classList.add("open");
    loadList();
  }

  function close() {
    panel.hidden = true;
    button.setAttribute("aria-expanded", "false");
    root.classList.remove("open");
  }

  const toggle = () => (panel.hidden ? open() : close());
  const outside = (event) => { if (!panel.hidden && !root.contains(event.target)) close(); };
  const escape = (event) => {
    if (event.key === "Escape" && !panel.hidden) {
      close();
      button.focus();
    }
  };
  const refresh = coalesce(() => Promise.all([loadCount(), panel.hidden ? null : loadList()]));
  button.addEventListener("click", toggle);
  document.addEventListener("click", outside);
  document.addEventListener("keydown", escape);
  window.addEventListener("hashchange", close);
  const off = live.subscribe("notification.created", refresh);
  const stopPolling = live.fallback(refresh);

  close();
  badge.hidden = true;
  if (hasReadState) {
    button.title = "Notifications";
    button.setAttribute("aria-label", "Notifications");
  } else {
    button.title = `Notifications. ${KEY_NOTE}`;
    button.setAttribute("aria-label", "Notifications (no read state for API keys)");
  }
  root.hidden = false;
  loadCount();

  return () => {
    stopped = true;
    close();
    off();
    stopPolling();
    button.removeEventListener("click", toggle);
    document.removeEventListener("click", outside);
    document.removeEventListener("keydown", escape);
    window.removeEventListener("hashchange", close);
    panel.replaceChildren();
  };
}
