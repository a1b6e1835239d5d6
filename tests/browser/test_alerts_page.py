"""Alerts and notifications in the dashboard (§10, §11) in headless Chromium,
against a real in-process server with a temp DB: the Alerts page (rules,
budgets, firings; create and delete), the notifications bell (unread count,
live, mark read), the open alerts on the Overview, and the budget bar on the
customer page and in the portal.

Set-up goes through the HTTP API: a meter, a plan of 1.00 USD a call, Acme
Corp on it since the first of this month (UTC) with a 100.00 USD budget
(steps 50, 80, 100), a customer named like an HTML attack, Globex (EUR) with
a budget and no usage, three rules (a usage rule for Acme, a spend rule for
every USD customer, a usage rule for the attack named like the attack), 85 of
Acme's calls, 1,000 of the attack's and one evaluation: 85.00 USD fires
Acme's 50% and 80% steps and its usage rule, and the attack's rule fires
(its name must stay text everywhere). A customer user for Acme signs in. The browser
runs in Asia/Tokyo, so times are Tokyo's. Every test ends by checking that
the page logged no console error, threw nothing and broke no CSP rule.
Screenshots at 1280 and 375 px go to /tmp/shots/ (alerts-*.png).
"""

import base64
import json
import os
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from tests.browser.test_dashboard import INJECTION, browser, dashboard, iso  # noqa: F401  (the shared fixtures)
from tests.browser.test_invoice_workflow import SHOTS, fits_the_screen, snap
from tests.browser.test_resources_page import MAX_STREAMS, hold_streams, release
from tests.harness import ADMIN_KEY

ZONE = "Asia/Tokyo"
PASSWORD = "alerts-password-1"
TENANT = {"email": "ada@acme.example", "name": "Ada Tenant", "role": "customer"}
PLAN = {"code": "calls", "name": "Calls", "currency": "USD", "base_fee": "0.00",
        "charges": [{"meter": "api_calls", "model": "per_unit", "unit_price": "1.00"}]}
BUDGET = {"monthly": "100.00", "alert_at_percent": [50, 80, 100]}
LIVE_WAIT = 20  # seconds: a deadline for the live update (it comes over the stream, the page does not poll meanwhile)


@pytest.fixture
def alerting(server):
    admin = server.admin
    assert admin.post("/v1/meters", {"key": "api_calls", "name": "API calls", "unit": "call",
                                     "aggregation": "sum"}).status == 201
    assert admin.post("/v1/plans", PLAN).status == 201
    ids = {}
    for key, body in (("acme", {"name": "Acme Corp", "email": "ops@acme.example", "budget": BUDGET}),
                      ("attack", {"name": INJECTION, "email": "x@attack.example"}),
                      ("globex", {"name": "Globex", "email": "ap@globex.example", "currency": "EUR",
                                  "budget": {"monthly": "1000.00", "alert_at_percent": [25, 90]}})):
        reply = admin.post("/v1/customers", body)
        assert reply.status == 201, reply
        ids[key] = reply.json["id"]
    month_start = datetime.now(timezone.utc).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    reply = admin.post("/v1/subscriptions", {"customer_id": ids["acme"], "plan": "calls",
                                             "start": month_start.date().isoformat()})
    assert reply.status == 201, reply
    rules = {}
    for key, body in (("busy", {"name": "Busy Acme", "customer_id": ids["acme"], "type": "usage",
                                "meter": "api_calls", "threshold": 60}),
                      ("big", {"name": "Big USD spend", "type": "spend", "currency": "USD", "threshold": "5000.00"}),
                      ("attack", {"name": INJECTION, "customer_id": ids["attack"], "type": "usage",
                                  "meter": "api_calls", "threshold": 1000})):
        reply = admin.post("/v1/alerts", body)
        assert reply.status == 201, reply
        rules[key] = reply.json["id"]
    for person in ({**TENANT, "customer_id": ids["acme"]},):
        reply = admin.post("/v1/users", {**person, "password": PASSWORD})
        assert reply.status == 201, reply
    send_calls(server, ids["acme"], 85, "first")
    send_calls(server, ids["attack"], 1000, "attack")
    assert evaluate(server) == 4  # Acme: 50% and 80% of the budget, Busy Acme; the attack's rule
    return {"ids": ids, "rules": rules, "month_start": month_start}


def send_calls(server, customer_id, calls, name):
    # a minute ago, but never before this month (the open period)
    now = datetime.now(timezone.utc)
    moment = max(now - timedelta(minutes=1), now.replace(day=1, hour=0, minute=0, second=0, microsecond=0))
    reply = server.admin.post("/v1/events", {"id": f"calls-{name}", "customer_id": customer_id, "meter": "api_calls",
                                             "quantity": calls, "timestamp": iso(moment)})
    assert reply.status == 201, reply


def evaluate(server):
    reply = server.admin.post("/v1/alerts/evaluate", {})
    assert reply.status == 200, reply
    return reply.json["fired"]


def firings(server, **query):
    path = "/v1/alerts/events" + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")
    return server.admin.get(path).json["data"]


def tokyo_time(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(ZoneInfo(ZONE)).strftime("%Y-%m-%d %H:%M")


def sign_in(dashboard, person=None, hash_=""):
    dashboard.browser.send("Emulation.setTimezoneOverride", {"timezoneId": ZONE})
    if person is None:
        dashboard.sign_in(hash_=hash_)
        dashboard.signed_in()
    else:
        dashboard.sign_in(email=person["email"], password=PASSWORD, hash_=hash_)
        who = f"{person['email']} ({person['role']})"
        dashboard.wait(f"document.querySelector('#who')?.textContent === {json.dumps(who)}")
    dashboard.wait("!document.querySelector('#bell').hidden")


def sign_out(dashboard):
    dashboard.click("#sign-out")
    dashboard.wait("!!document.querySelector('#signin-form')")


def firing_rows(dashboard, table="#alert-firings-table"):
    return dashboard.js(f"""[...document.querySelectorAll('{table} tbody tr[data-id]')].map((tr) => ({{
        id: +tr.dataset.id, type: tr.dataset.type, fresh: tr.classList.contains('new'),
        customer: tr.querySelector('td.customer')?.textContent ?? null,
        time: tr.querySelector('td.time time').textContent, datetime: tr.querySelector('td.time time').getAttribute('datetime'),
        amounts: tr.querySelector('td.amounts').textContent, message: tr.querySelector('td.message').textContent}}))""")


def rule_rows(dashboard):
    return dashboard.js("""[...document.querySelectorAll('table.alert-rules tbody tr[data-id]')].map((tr) =>
        [+tr.dataset.id, ...[...tr.cells].filter((td) => !td.classList.contains('row-actions')).map((td) => td.textContent)])""")


def bell_count(dashboard):
    return dashboard.js("(() => { const b = document.querySelector('#bell-count');"
                        " return b.hidden ? 0 : +b.dataset.count; })()")


def unread_count(dashboard):
    """The signed-in user's unread count, as the API tells that user."""
    token = dashboard.js("sessionStorage.getItem('meterline.token')")
    return dashboard.server.client(token).get("/v1/notifications?unread=true").json["unread_count"]


def expected_rows(server, customer_names=None, **query):
    rows = []
    for firing in firings(server, **query):
        suffix = f" {firing['currency'] or 'call'}"
        row = {"id": firing["id"], "type": firing["type"], "time": tokyo_time(firing["created_at"]),
               "datetime": firing["created_at"], "amounts": f"{firing['threshold']}{suffix} → {firing['value']}{suffix}",
               "message": firing["message"]}
        if customer_names is not None:
            row["customer"] = customer_names[firing["customer_id"]]
        rows.append(row)
    return rows


def shown(rows):
    return [{key: value for key, value in row.items() if key != "fresh" and value is not None} for row in rows]


def shoot_part(dashboard, selector, name):
    """A screenshot of one element (and a little around it), to look at a detail of a long page."""
    box = dashboard.js(f"(() => {{ const r = document.querySelector({json.dumps(selector)}).getBoundingClientRect();"
                       " return { x: Math.max(0, r.left + scrollX - 8), y: Math.max(0, r.top + scrollY - 8),"
                       " width: r.width + 16, height: r.height + 16 }; })()")
    data = dashboard.browser.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True,
                                                             "clip": {**box, "scale": 1}})["data"]
    os.makedirs(SHOTS, exist_ok=True)
    with open(os.path.join(SHOTS, f"{name}.png"), "wb") as handle:
        handle.write(base64.b64decode(data))


def phone_panel_fits(dashboard):
    return dashboard.js("(() => { const r = document.querySelector('#bell-panel').getBoundingClientRect();"
                        " return r.left >= 0 && r.right <= document.documentElement.clientWidth + 0.5; })()")


# -- the Alerts page ---------------------------------------------------------------------

def test_the_alerts_page_lists_rules_budgets_and_firings_creates_and_deletes_rules_and_follows_live(dashboard, alerting):
    server = dashboard.server
    ids, rules = alerting["ids"], alerting["rules"]
    names = {ids["acme"]: "Acme Corp", ids["attack"]: INJECTION, ids["globex"]: "Globex"}
    sign_in(dashboard, hash_="#/alerts")
    assert dashboard.texts("#nav a") == ["Overview", "Customers", "Invoices", "Resources", "Storage", "Plans",
                                         "Meters", "Events", "Alerts", "Webhooks", "Jobs", "Users", "Audit log"]
    assert dashboard.text("#nav a[aria-current=page]") == "Alerts"
    assert dashboard.text("#alerts-zone strong") == ZONE

    # The rules, each with its customer (or every customer), type, meter or currency and threshold.
    dashboard.wait("document.querySelectorAll('table.alert-rules tbody tr[data-id]').length === 3"
                   " && [...document.querySelectorAll('table.alert-rules td.customer a')].every((a) => !a.textContent.startsWith('Customer #'))")
    assert rule_rows(dashboard) == [
        [rules["busy"], "Busy Acme", "Acme Corp", "Usage", "api_calls", "60 call"],
        [rules["big"], "Big USD spend", "every customer", "Spend", "USD", "5000.00 USD"],
        [rules["attack"], INJECTION, INJECTION, "Usage", "api_calls", "1000 call"]]

    # The budgets, linking to their customers.
    dashboard.wait("document.querySelectorAll('table.alert-budgets tbody tr[data-customer-id]').length === 2")
    assert dashboard.js("[...document.querySelectorAll('table.alert-budgets tbody tr')].map((tr) =>"
                        " [tr.querySelector('a').getAttribute('href'), ...[...tr.cells].map((td) => td.textContent)])") == [
        [f"#/customers/{ids['acme']}", "Acme Corp", "100.00 USD", "50%, 80%, 100%"],
        [f"#/customers/{ids['globex']}", "Globex", "1000.00 EUR", "25%, 90%"]]

    # What fired, newest first, in Tokyo time, with the customer, step or rule, threshold → value and message.
    dashboard.wait("document.querySelectorAll('#alert-firings-table tbody tr[data-id]').length === 4 && [...document"
                   ".querySelectorAll('#alert-firings-table td.customer a')].every((a) => !a.textContent.startsWith('Customer #'))")
    expected = expected_rows(server, names)
    assert shown(firing_rows(dashboard)) == expected
    assert [(row["type"], row["customer"]) for row in expected] == [
        ("usage", INJECTION), ("usage", "Acme Corp"), ("budget", "Acme Corp"), ("budget", "Acme Corp")]
    assert dashboard.texts("#alert-firings-table td.step") == [f"“{INJECTION}” · api_calls", "“Busy Acme” · api_calls",
                                                               "80% of the budget", "50% of the budget"]
    assert dashboard.js("[...document.querySelectorAll('#alert-firings-table td.customer a')].map((a) => a.getAttribute('href'))") \
        == [f"#/customers/{ids['attack']}"] + [f"#/customers/{ids['acme']}"] * 3
    assert dashboard.count("img") == 0  # the attack's name stayed text
    snap(dashboard, "alerts-page", 1280)
    snap(dashboard, "alerts-page", 375)

    # A rule created through the form: a usage rule for the attack customer.
    dashboard.click("#new-alert > summary")
    dashboard.wait(f"!!document.querySelector('#create-alert [name=customer_id] option[value=\"{ids['attack']}\"]')"
                   " && !!document.querySelector('#create-alert [name=meter] option[value=api_calls]')")
    dashboard.fill("#create-alert [name=name]", "Attack watch")
    dashboard.fill("#create-alert [name=type]", "usage")
    dashboard.fill("#create-alert [name=customer_id]", str(ids["attack"]))
    dashboard.fill("#create-alert [name=meter]", "api_calls")
    assert dashboard.text("#create-alert .threshold-label") == "Threshold (call)"
    dashboard.fill("#create-alert [name=threshold]", "250")
    dashboard.click("#create-alert button[type=submit]")
    dashboard.wait("document.querySelector('#new-alert .message.ok')?.textContent.includes('Attack watch')")
    dashboard.wait("document.querySelectorAll('table.alert-rules tbody tr[data-id]').length === 4")
    created = [rule for rule in server.admin.get("/v1/alerts").json["data"] if rule["name"] == "Attack watch"]
    assert [(r["customer_id"], r["type"], r["meter"], r["threshold"]) for r in created] == [
        (ids["attack"], "usage", "api_calls", "250")]
    assert rule_rows(dashboard)[-1][1:] == ["Attack watch", INJECTION, "Usage", "api_calls", "250 call"]

    # A bad one: a spend rule for every customer needs a currency; the error is on that field, nothing is created.
    dashboard.allowed_failures.add(("/v1/alerts", 400))
    dashboard.fill("#create-alert [name=name]", "No currency")
    dashboard.fill("#create-alert [name=type]", "spend")
    dashboard.fill("#create-alert [name=customer_id]", "")
    assert not dashboard.js("document.querySelector('#create-alert [name=currency]').closest('.field').hidden")
    dashboard.fill("#create-alert [name=threshold]", "10.00")
    dashboard.click("#create-alert button[type=submit]")
    dashboard.wait("document.querySelector('#new-alert .message.error')?.textContent.startsWith('Could not create')")
    assert dashboard.js("document.querySelector('#create-alert [name=currency]').classList.contains('invalid')")
    assert dashboard.text("#create-alert .field-error[data-for=currency]") == "is required for a spend alert on every customer"
    dashboard.fill("#create-alert [name=currency]", "usd")
    dashboard.fill("#create-alert [name=threshold]", "0.00")
    dashboard.click("#create-alert button[type=submit]")
    dashboard.wait("document.querySelector('#create-alert .field-error[data-for=threshold]')?.textContent === 'must be greater than zero'")
    assert dashboard.count("#create-alert .field-error[data-for=currency]") == 0
    assert len(server.admin.get("/v1/alerts").json["data"]) == 4
    assert dashboard.count("table.alert-rules tbody tr[data-id]") == 4
    snap(dashboard, "alerts-form-error", 1280)
    snap(dashboard, "alerts-form-error", 375)

    # Delete a rule: the first click asks, the second deletes; what it fired stays.
    delete = f"table.alert-rules tr[data-id='{rules['big']}'] button.delete"
    dashboard.click(delete)
    assert dashboard.text(delete) == "Confirm delete"
    assert len(server.admin.get("/v1/alerts").json["data"]) == 4
    dashboard.click(delete)
    dashboard.wait(f"!document.querySelector(\"table.alert-rules tr[data-id='{rules['big']}']\")")
    assert dashboard.text("#alert-rules .message.ok").startswith("Deleted the alert rule “Big USD spend”")
    assert rules["big"] not in [rule["id"] for rule in server.admin.get("/v1/alerts").json["data"]]

    # A new firing appears at the top while the page is open, without a reload.
    dashboard.wait("document.querySelector('#live-status')?.dataset.state === 'live'")
    dashboard.js("window.__stayed = true")
    send_calls(server, ids["acme"], 20, "more")  # 105.00 USD: the 100% step; and the new rule for the attack
    assert evaluate(server) == 2
    dashboard.wait("document.querySelectorAll('#alert-firings-table tbody tr[data-id]').length === 6", timeout=LIVE_WAIT)
    rows = firing_rows(dashboard)
    assert [row["fresh"] for row in rows] == [True, True, False, False, False, False]
    assert shown(rows) == expected_rows(server, names) and dashboard.js("window.__stayed === true")
    assert sorted(row["amounts"] for row in rows[:2]) == ["100.00 USD → 105.00 USD", "250 call → 1000 call"]
    dashboard.assert_clean()


def test_a_viewer_reads_the_alerts_page_without_create_or_delete(dashboard, alerting):
    server = dashboard.server
    viewer = {"email": "vera@meterline.example", "name": "Vera Viewer", "role": "viewer"}
    assert server.admin.post("/v1/users", {**viewer, "password": PASSWORD}).status == 201
    sign_in(dashboard, viewer, hash_="#/alerts")
    assert "Alerts" in dashboard.texts("#nav a:not([hidden])")
    dashboard.wait("document.querySelectorAll('table.alert-rules tbody tr[data-id]').length === 3"
                   " && document.querySelectorAll('#alert-firings-table tbody tr[data-id]').length === 4")
    assert dashboard.count("#new-alert, #create-alert, table.alert-rules button.delete") == 0
    assert dashboard.text("#alerts-read-only") == "Read only: admin and finance create and delete alert rules."
    assert "null" not in dashboard.text("main")
    dashboard.assert_clean()


# -- the notifications bell --------------------------------------------------------------

def test_the_bell_counts_unread_follows_new_firings_live_and_marks_read(dashboard, alerting):
    server = dashboard.server
    sign_in(dashboard)
    dashboard.wait("document.querySelector('#bell-count')?.dataset.count === '4'")
    assert bell_count(dashboard) == unread_count(dashboard) == 4
    assert dashboard.js("document.querySelector('#bell-button').title") == "Notifications: 4 unread notifications"

    # A new firing while the page is open: the count follows over the live stream, no reload.
    dashboard.wait("document.querySelector('#live-status')?.dataset.state === 'live'")
    dashboard.js("window.__stayed = true")
    send_calls(server, alerting["ids"]["acme"], 20, "more")
    assert evaluate(server) == 1
    dashboard.wait("document.querySelector('#bell-count')?.dataset.count === '5'", timeout=LIVE_WAIT)
    assert dashboard.js("window.__stayed === true") and unread_count(dashboard) == 5

    # The panel: the latest notifications, newest first, unread ones marked.
    dashboard.click("#bell-button")
    dashboard.wait("document.querySelectorAll('#notification-list li.notification').length === 5")
    assert dashboard.js("document.querySelector('#bell-button').getAttribute('aria-expanded')") == "true"
    titles = dashboard.texts("#notification-list .notification-title")
    assert titles == ["Budget 100% reached: Acme Corp", f"Usage alert: {INJECTION}", "Usage alert: Acme Corp",
                      "Budget 80% reached: Acme Corp", "Budget 50% reached: Acme Corp"]
    assert dashboard.count("#notification-list li.notification.unread") == 5 and dashboard.count("img") == 0
    newest = firings(server)[0]
    assert dashboard.text("#notification-list li .notification-message") == newest["message"]
    assert dashboard.text("#notification-list li .notification-time time") == tokyo_time(newest["created_at"])
    snap_panel(dashboard, "alerts-bell")

    # One marked read by a click; then all of them.
    first = dashboard.js("+document.querySelector('#notification-list li.notification').dataset.id")
    dashboard.click("#notification-list li.notification button.mark-read")
    dashboard.wait(f"document.querySelector(\"#notification-list li[data-id='{first}']\")?.dataset.read === 'true'")
    dashboard.wait("document.querySelector('#bell-count')?.dataset.count === '4'")
    assert unread_count(dashboard) == 4
    dashboard.click("#mark-all-read")
    dashboard.wait("document.querySelector('#bell-count').hidden && document.querySelector('#bell-count').dataset.count === '0'")
    dashboard.wait("document.querySelectorAll('#notification-list li.notification.unread').length === 0"
                   " && document.querySelectorAll('#notification-list li.notification').length === 5")
    assert unread_count(dashboard) == 0
    assert dashboard.js("document.querySelector('#mark-all-read').disabled")
    dashboard.js("document.dispatchEvent(new KeyboardEvent('keydown', { key: 'Escape' }))")
    assert dashboard.js("document.querySelector('#bell-panel').hidden")
    dashboard.assert_clean()


def snap_panel(dashboard, name):
    """The open panel at a desktop and a phone width (it must stay on the phone's screen)."""
    snap(dashboard, name, 1280)
    dashboard.browser.send("Emulation.setDeviceMetricsOverride",
                           {"width": 375, "height": 812, "deviceScaleFactor": 2, "mobile": True})
    assert phone_panel_fits(dashboard)
    snap(dashboard, name, 375)


def test_without_a_stream_the_bell_polls(dashboard, alerting):
    server = dashboard.server
    dashboard.allowed_failures.add(("/v1/stream", 503))
    held = hold_streams(server.port, MAX_STREAMS)
    try:
        sign_in(dashboard, hash_="#/customers")
        dashboard.wait("document.querySelector('#live-status')?.dataset.state === 'polling'")
        dashboard.wait("document.querySelector('#bell-count')?.dataset.count === '4'")
        send_calls(server, alerting["ids"]["acme"], 20, "more")
        assert evaluate(server) == 1
        dashboard.wait("document.querySelector('#bell-count')?.dataset.count === '5'", timeout=LIVE_WAIT)
    finally:
        release(held)
    dashboard.assert_clean()


def test_an_api_key_sees_notifications_without_read_state(dashboard, alerting):
    dashboard.browser.send("Emulation.setTimezoneOverride", {"timezoneId": ZONE})
    dashboard.open()
    dashboard.wait("!!document.querySelector('#signin-form')")
    dashboard.click("details.key-option > summary")
    dashboard.fill("#key-form [name=key]", ADMIN_KEY)
    dashboard.click("#key-form button[type=submit]")
    dashboard.wait("!document.querySelector('#bell').hidden")
    assert dashboard.js("document.querySelector('#bell-count').hidden")
    assert "API keys have no read state" in dashboard.js("document.querySelector('#bell-button').title")
    dashboard.click("#bell-button")
    dashboard.wait("document.querySelectorAll('#notification-list li.notification').length === 4")
    assert dashboard.count("#mark-all-read, #notification-list .mark-read, #notification-list li.unread") == 0
    assert set(dashboard.texts("#notification-list li.notification")) and \
        dashboard.js("[...document.querySelectorAll('#notification-list li.notification')].every((li) => li.dataset.read === 'none')")
    assert dashboard.text("#bell-key-note").startswith("API keys have no read state")
    dashboard.assert_clean()


# -- the Overview --------------------------------------------------------------------------

def test_the_overview_shows_the_open_alerts_and_their_count(dashboard, alerting):
    server = dashboard.server
    sign_in(dashboard)
    dashboard.wait("document.querySelectorAll('#open-alerts ol.open-alerts li[data-id]').length === 4"
                   " && [...document.querySelectorAll('#open-alerts li a')].every((a) => !a.textContent.startsWith('Customer #'))")
    assert dashboard.texts("#open-alerts li a") == [INJECTION] + ["Acme Corp"] * 3 and dashboard.count("img") == 0
    month = firings(server, **{"from": alerting["month_start"].strftime("%Y-%m-%dT%H:%M:%SZ")})
    assert dashboard.js("[...document.querySelectorAll('#open-alerts li[data-id]')].map((li) => +li.dataset.id)") == \
        [firing["id"] for firing in month]
    assert dashboard.texts("#open-alerts .open-alert-message") == [firing["message"] for firing in month]
    assert dashboard.texts("#open-alerts .open-alert-time") == [tokyo_time(firing["created_at"]) for firing in month]
    assert dashboard.js("document.querySelector('#open-alerts a.all-alerts').getAttribute('href')") == "#/alerts"
    expected = server.admin.get(f"/v1/analytics/overview?timezone={ZONE}").json["alerts_this_month"]
    dashboard.wait("!!document.querySelector('#kpis [data-kpi=alerts_this_month] .kpi-value[data-value]')")
    assert dashboard.js("+document.querySelector('#kpis [data-kpi=alerts_this_month] .kpi-value').dataset.value") == expected == 4
    snap(dashboard, "alerts-overview", 1280)
    snap(dashboard, "alerts-overview", 375)

    # A firing while the page is open reaches the card and the figure.
    send_calls(server, alerting["ids"]["acme"], 20, "more")
    assert evaluate(server) == 1
    dashboard.wait("document.querySelectorAll('#open-alerts li[data-id]').length === 5"
                   " && document.querySelector('#kpis [data-kpi=alerts_this_month] .kpi-value')?.dataset.value === '5'",
                   timeout=LIVE_WAIT)
    dashboard.assert_clean()


# -- the budget bar: the customer page and the portal ------------------------------------------

def budget(dashboard):
    return dashboard.js("""(() => { const b = document.querySelector('#upcoming-invoice .budget');
        return b && { percent: +b.dataset.percent, text: b.querySelector('.budget-text').textContent,
          width: b.querySelector('svg.budget-bar .fill').getAttribute('width'),
          ticks: [...b.querySelectorAll('svg.budget-bar line.tick')].map((t) => [+t.dataset.value, t.getAttribute('x1'),
            t.classList.contains('reached')]),
          labels: [...b.querySelectorAll('svg.bar-scale text')].map((t) => [t.textContent, t.getAttribute('x')]) }; })()""")


EXPECTED_BUDGET = {"percent": 85, "text": "Spend 85.00 USD of the 100.00 USD monthly budget · 85%", "width": "85.000",
                   "ticks": [[50, "50.000", True], [80, "80.000", True]],
                   "labels": [["100%", "100.000%"], ["80%", "80.000%"], ["50%", "50.000%"]]}


def test_the_customer_page_and_the_portal_show_the_budget_bar_and_the_alerts(dashboard, alerting):
    server = dashboard.server
    acme = alerting["ids"]["acme"]
    sign_in(dashboard, hash_=f"#/customers/{acme}")
    dashboard.wait("!!document.querySelector('#upcoming-invoice .budget')")
    assert budget(dashboard) == EXPECTED_BUDGET
    dashboard.wait("document.querySelectorAll('#customer-alerts-table tbody tr[data-id]').length === 3")
    assert shown(firing_rows(dashboard, "#customer-alerts-table")) == expected_rows(server, customer_id=acme)
    dashboard.wait("document.querySelector('#customer-alerts-table td.step')?.textContent === '“Busy Acme” · api_calls'")
    shoot_part(dashboard, "#upcoming-invoice .budget", "alerts-customer-budget-1280")
    shoot_part(dashboard, "#customer-alerts", "alerts-customer-alerts-1280")
    snap(dashboard, "alerts-customer", 1280)
    snap(dashboard, "alerts-customer", 375)
    dashboard.browser.send("Emulation.setDeviceMetricsOverride",
                           {"width": 375, "height": 812, "deviceScaleFactor": 2, "mobile": True})
    shoot_part(dashboard, "#upcoming-invoice", "alerts-customer-budget-375")
    shoot_part(dashboard, "#customer-alerts", "alerts-customer-alerts-375")
    dashboard.browser.send("Emulation.clearDeviceMetricsOverride")
    # Globex has a budget and nothing fired: an empty list, and no bar for the attack without a budget.
    dashboard.go(f"#/customers/{alerting['ids']['globex']}")
    dashboard.wait("document.querySelector('#customer-alerts-table td.empty')?.textContent === 'Nothing has fired yet.'")
    dashboard.go(f"#/customers/{alerting['ids']['attack']}")
    dashboard.wait("!!document.querySelector('#upcoming-invoice .upcoming-total')")
    assert dashboard.count("#upcoming-invoice .budget") == 0 and dashboard.count("img") == 0
    sign_out(dashboard)

    # The customer user: the same bar and alerts in its portal, its own notifications in the bell.
    sign_in(dashboard, TENANT)
    dashboard.wait("document.querySelector('main h1')?.textContent === 'Acme Corp'"
                   " && !!document.querySelector('#upcoming-invoice .budget')")
    assert budget(dashboard) == EXPECTED_BUDGET
    dashboard.wait("document.querySelectorAll('#portal-alerts-table tbody tr[data-id]').length === 3")
    assert shown(firing_rows(dashboard, "#portal-alerts-table")) == expected_rows(server, customer_id=acme)
    dashboard.wait("document.querySelector('#bell-count')?.dataset.count === '3'")
    assert unread_count(dashboard) == 3
    assert dashboard.count("#nav a:not([hidden])") == 0
    dashboard.browser.send("Emulation.setDeviceMetricsOverride",
                           {"width": 375, "height": 812, "deviceScaleFactor": 2, "mobile": True})
    shoot_part(dashboard, "#upcoming-invoice", "alerts-portal-budget-375")
    dashboard.browser.send("Emulation.clearDeviceMetricsOverride")
    snap(dashboard, "alerts-portal", 1280)
    snap(dashboard, "alerts-portal", 375)
    dashboard.click("#bell-button")
    dashboard.wait("document.querySelectorAll('#notification-list li.notification.unread').length === 3")
    assert dashboard.count("#notification-list li.notification") == 3 and "onerror" not in dashboard.text("#bell-panel")
    assert dashboard.count("#bell-panel a.all-alerts, #bell-panel .notification-foot:not([hidden])") == 0  # no Alerts page
    snap_panel(dashboard, "alerts-portal-bell")
    dashboard.browser.send("Emulation.clearDeviceMetricsOverride")

    # The tenant's next firing arrives live in its portal and its bell; it marks them all read.
    send_calls(server, acme, 20, "more")
    assert evaluate(server) == 1
    dashboard.wait("document.querySelectorAll('#portal-alerts-table tbody tr[data-id]').length === 4"
                   " && document.querySelector('#bell-count')?.dataset.count === '4'", timeout=LIVE_WAIT)
    dashboard.wait("document.querySelectorAll('#notification-list li.notification.unread').length === 4")
    dashboard.click("#mark-all-read")
    dashboard.wait("document.querySelector('#bell-count').hidden")
    assert unread_count(dashboard) == 0
    admin_unread = server.admin.get("/v1/notifications?unread=true").json
    assert admin_unread["data"] and all(item["read"] is None for item in admin_unread["data"])  # a key has no read state
    assert fits_the_screen(dashboard)
    dashboard.assert_clean()
