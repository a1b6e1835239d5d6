/* The dashboard shell: a hash router, the navigation bar and the sign-in gate.
   Each page is a module with render(main, context) that may return a cleanup
   function (run when the page is left, e.g. to stop auto-refresh).

   Staff roles start on the Overview. A customer user (role "customer") gets
   the customer portal and nothing else: its own routes, no staff navigation,
   and every other address leads to the portal's home. API keys of other
   roles (a customer-scoped key, an ingest key) start on the customers. */

import * as api from "./api.js";
import { h } from "./dom.js";
import * as live from "./live.js";
import * as bell from "./notifications.js";
import * as signIn from "./pages/signin.js";
import * as overview from "./pages/overview.js";
import * as customers from "./pages/customers.js";
import * as customer from "./pages/customer.js";
import * as meters from "./pages/meters.js";
import * as events from "./pages/events.js";
import * as plans from "./pages/plans.js";
import * as invoices from "./pages/invoices.js";
import * as invoice from "./pages/invoice.js";
import * as webhooks from "./pages/webhooks.js";
import * as webhook from "./pages/webhook.js";
import * as jobs from "./pages/jobs.js";
import * as users from "./pages/users.js";
import * as audit from "./pages/audit.js";
import * as alerts from "./pages/alerts.js";
import * as resources from "./pages/resources.js";
import * as storage from "./pages/storage.js";
import * as portal from "./pages/portal.js";
import * as portalInvoice from "./pages/portal-invoice.js";

const HOME = "#/customers"; // for credentials that may not read the overview
const ROUTES = [
  // [pattern on the hash without its query, page, navigation section]
  [/^#\/overview$/, overview, "overview"],
  [/^#\/customers$/, customers, "customers"],
  [/^#\/customers\/(\d+)$/, customer, "customers"],
  [/^#\/invoices$/, invoices, "invoices"],
  [/^#\/invoices\/(\d+)$/, invoice, "invoices"],
  [/^#\/resources$/, resources, "resources"],
  [/^#\/storage$/, storage, "storage"],
  [/^#\/storage\/(\d+)$/, storage, "storage"],
  [/^#\/plans$/, plans, "plans"],
  [/^#\/meters$/, meters, "meters"],
  [/^#\/events$/, events, "events"],
  [/^#\/alerts$/, alerts, "alerts"],
  [/^#\/webhooks$/, webhooks, "webhooks"],
  [/^#\/webhooks\/(\d+)$/, webhook, "webhooks"],
  [/^#\/jobs$/, jobs, "jobs"],
  [/^#\/users$/, users, "users"],
  [/^#\/audit$/, audit, "audit"],
];
const PORTAL_ROUTES = [
  [/^#\/portal$/, portal, "portal"],
  [/^#\/portal\/invoices\/(\d+)$/, portalInvoice, "portal"],
];

/** Whether the signed-in identity is a customer user: the portal is all it sees. */
function isTenant(identity) {
  return identity.kind === "user" && identity.role === "customer";
}

/** Where the signed-in identity starts (and where unknown addresses lead). */
function homeOf(identity) {
  if (isTenant(identity)) return portal.HOME;
  return overview.ROLES.includes(identity.role) ? overview.HOME : HOME;
}

const main = document.getElementById("main");
const topbar = document.getElementById("topbar");
let me = null; // GET /v1/auth/me for the current token
let leavePage = null;
let renders = 0;

function leave() {
  if (leavePage) leavePage();
  leavePage = null;
  main.replaceChildren();
}

function showSignIn(notice) {
  leave();
  live.stop(); // the stream belongs to the signed-in token
  bell.stop();
  me = null;
  topbar.hidden = true;
  document.title = "Sign in · Meterline";
  return signIn.render(main, { notice, onSignedIn });
}

function onSignedIn(identity) {
  me = identity;
  route();
}

function showAccount() {
  const who = document.getElementById("who");
  const name = me.kind === "user" ? me.user.email : `API key “${me.api_key.name}”`;
  // Two short lines (name over role) keep the bar on one row; the text reads "name (role)" all the same.
  who.replaceChildren(h("span", { class: "who-name" }, name), h("span", { class: "who-paren" }, " ("),
    h("span", { class: "who-role" }, me.role), h("span", { class: "who-paren" }, ")"));
  who.title = `${name} (${me.role})`;
  const tenant = isTenant(me);
  // The portal has no navigation bar: none of the staff sections is theirs.
  document.getElementById("nav").hidden = tenant;
  document.querySelector("#topbar .brand").setAttribute("href", homeOf(me));
  // Sections a role cannot read (data-roles lists who can) stay out of the bar.
  for (const link of document.querySelectorAll("#nav a")) {
    link.hidden = tenant || (link.dataset.roles !== undefined && !link.dataset.roles.split(" ").includes(me.role));
  }
  bell.start(me); // the notifications of this identity (once per sign-in)
  topbar.hidden = false;
}

function highlight(section) {
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.dataset.section === section) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

async function route() {
  const current = ++renders;
  if (!api.token()) {
    showSignIn();
    return;
  }
  if (!me) {
    try {
      me = await api.get("/v1/auth/me");
    } catch (error) {
      if (error.status !== 401) showSignIn(`Cannot load your account: ${error.message}`);
      return; // a 401 already went back to sign-in
    }
    if (current !== renders) return; // another navigation started meanwhile
  }
  live.start(); // one stream per page load, shared by the pages (no-op when open)
  const tenant = isTenant(me);
  const home = homeOf(me);
  const [path, query = ""] = (location.hash || home).split("?");
  const found = (tenant ? PORTAL_ROUTES : ROUTES).map(([pattern, page, section]) => [path.match(pattern), page, section])
    .find(([match]) => match);
  if (!found) {
    location.replace(home); // no history entry: Back does not return to an address that only redirects
    return;
  }
  const [match, page, section] = found;
  leave();
  showAccount();
  highlight(section);
  if (page.ROLES && !page.ROLES.includes(me.role)) {
    // The bar hides the link; a typed or old address gets a plain explanation.
    main.append(h("section", { class: "card" }, h("h1", {}, "Not available"),
      h("p", { class: "muted", id: "not-allowed" }, `This page is not available to the ${me.role.replace(/_/g, " ")} role.`)));
    return;
  }
  leavePage = page.render(main, {
    me, role: me.role, params: match.slice(1), query: new URLSearchParams(query),
  }) || null;
}

async function signOut() {
  const wasSession = me && me.kind === "user";
  const bearer = api.token();
  // Forget the token and leave the page first: what the page still has in
  // flight then answers into nothing instead of replacing the notice below.
  api.clearToken();
  const page = showSignIn("Signing out…");
  let notice = "You are signed out.";
  if (wasSession && bearer) {
    try {
      await api.post("/v1/auth/logout", {}, { token: bearer });
    } catch (error) {
      notice = `Signed out here, but the server said: ${error.message}`;
    }
  }
  // unless someone signed in meanwhile: the notice changes, the forms (and what is typed in them) stay
  if (!api.token()) page.notice(notice);
}

live.bindIndicator(document.getElementById("live-status"));
api.onSignedOut((message) => showSignIn(`Please sign in again. ${message}`));
document.getElementById("sign-out").addEventListener("click", signOut);
window.addEventListener("hashchange", route);
route();
